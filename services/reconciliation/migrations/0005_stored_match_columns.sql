-- Matching reads every text it compares as a code (a 63-bit hash of the text as matching normalises
-- it) and a check (a second hash): computing them for a million rows at each run was most of the
-- database's time in a large reconcile. They are now computed once, when a row is written, for the
-- rules' default (references compared without regard to case; descriptions as written). A run whose
-- rules compare references case-sensitively still codes them as it reads them.
-- Kept equal to the store's `_coded_query` (normalised: btrim of what Python's str.strip() removes,
-- lower() in the C collation; -1 for none or empty, -2 for text that is not plain ASCII, which Python
-- normalises itself).
-- The other columns matching reads are stored the same way, as the store's line_columns and
-- entry_columns read them: a currency (char(3)) as one integer, its code points side by side (equal
-- codes, equal currencies; parenthesised, since PostgreSQL gives << and | one precedence, left to right:
-- unparenthesised, the first letter is shifted out and USD = SSD), days as Python's date.toordinal()
-- (date - (DATE '0001-01-01' - 1); posting days in UTC), -1 for no booking date.

ALTER TABLE statement_lines
    ADD COLUMN reference_code bigint GENERATED ALWAYS AS (CASE WHEN reference IS NULL THEN -1 WHEN octet_length(reference) <> char_length(reference) THEN -2
        WHEN lower(btrim(reference, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C") = '' THEN -1
        ELSE hashtextextended(lower(btrim(reference, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C"), 0) & 9223372036854775807 END) STORED,
    ADD COLUMN reference_check bigint GENERATED ALWAYS AS (CASE WHEN reference IS NULL THEN -1 WHEN octet_length(reference) <> char_length(reference) THEN -2
        WHEN lower(btrim(reference, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C") = '' THEN -1
        ELSE hashtextextended(lower(btrim(reference, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C"), 1) END) STORED,
    ADD COLUMN end_to_end_code bigint GENERATED ALWAYS AS (CASE WHEN end_to_end_id IS NULL THEN -1 WHEN octet_length(end_to_end_id) <> char_length(end_to_end_id) THEN -2
        WHEN lower(btrim(end_to_end_id, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C") = '' THEN -1
        ELSE hashtextextended(lower(btrim(end_to_end_id, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C"), 0) & 9223372036854775807 END) STORED,
    ADD COLUMN end_to_end_check bigint GENERATED ALWAYS AS (CASE WHEN end_to_end_id IS NULL THEN -1 WHEN octet_length(end_to_end_id) <> char_length(end_to_end_id) THEN -2
        WHEN lower(btrim(end_to_end_id, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C") = '' THEN -1
        ELSE hashtextextended(lower(btrim(end_to_end_id, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C"), 1) END) STORED,
    ADD COLUMN description_code bigint GENERATED ALWAYS AS (CASE WHEN description IS NULL THEN -1 WHEN octet_length(description) <> char_length(description) THEN -2
        WHEN btrim(description, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') = '' THEN -1
        ELSE hashtextextended(btrim(description, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f'), 0) & 9223372036854775807 END) STORED,
    ADD COLUMN description_check bigint GENERATED ALWAYS AS (CASE WHEN description IS NULL THEN -1 WHEN octet_length(description) <> char_length(description) THEN -2
        WHEN btrim(description, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') = '' THEN -1
        ELSE hashtextextended(btrim(description, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f'), 1) END) STORED,
    ADD COLUMN currency_code bigint GENERATED ALWAYS AS ((ascii(substr(btrim(currency), 1, 1))::bigint << 42) | (ascii(substr(btrim(currency), 2, 1))::bigint << 21)
        | ascii(substr(btrim(currency), 3, 1))::bigint) STORED,
    ADD COLUMN value_day bigint GENERATED ALWAYS AS (value_date - (DATE '0001-01-01' - 1)) STORED,
    ADD COLUMN booking_day bigint GENERATED ALWAYS AS (coalesce(booking_date - (DATE '0001-01-01' - 1), -1)) STORED;

ALTER TABLE ledger_entries
    ADD COLUMN reference_code bigint GENERATED ALWAYS AS (CASE WHEN reference IS NULL THEN -1 WHEN octet_length(reference) <> char_length(reference) THEN -2
        WHEN lower(btrim(reference, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C") = '' THEN -1
        ELSE hashtextextended(lower(btrim(reference, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C"), 0) & 9223372036854775807 END) STORED,
    ADD COLUMN reference_check bigint GENERATED ALWAYS AS (CASE WHEN reference IS NULL THEN -1 WHEN octet_length(reference) <> char_length(reference) THEN -2
        WHEN lower(btrim(reference, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C") = '' THEN -1
        ELSE hashtextextended(lower(btrim(reference, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C"), 1) END) STORED,
    ADD COLUMN end_to_end_code bigint GENERATED ALWAYS AS (CASE WHEN end_to_end_id IS NULL THEN -1 WHEN octet_length(end_to_end_id) <> char_length(end_to_end_id) THEN -2
        WHEN lower(btrim(end_to_end_id, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C") = '' THEN -1
        ELSE hashtextextended(lower(btrim(end_to_end_id, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C"), 0) & 9223372036854775807 END) STORED,
    ADD COLUMN end_to_end_check bigint GENERATED ALWAYS AS (CASE WHEN end_to_end_id IS NULL THEN -1 WHEN octet_length(end_to_end_id) <> char_length(end_to_end_id) THEN -2
        WHEN lower(btrim(end_to_end_id, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C") = '' THEN -1
        ELSE hashtextextended(lower(btrim(end_to_end_id, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C"), 1) END) STORED,
    ADD COLUMN transfer_code bigint GENERATED ALWAYS AS (CASE WHEN transfer_id IS NULL THEN -1 WHEN octet_length(transfer_id) <> char_length(transfer_id) THEN -2
        WHEN lower(btrim(transfer_id, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C") = '' THEN -1
        ELSE hashtextextended(lower(btrim(transfer_id, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C"), 0) & 9223372036854775807 END) STORED,
    ADD COLUMN transfer_check bigint GENERATED ALWAYS AS (CASE WHEN transfer_id IS NULL THEN -1 WHEN octet_length(transfer_id) <> char_length(transfer_id) THEN -2
        WHEN lower(btrim(transfer_id, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C") = '' THEN -1
        ELSE hashtextextended(lower(btrim(transfer_id, E' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f') COLLATE "C"), 1) END) STORED,
    ADD COLUMN currency_code bigint GENERATED ALWAYS AS ((ascii(substr(btrim(currency), 1, 1))::bigint << 42) | (ascii(substr(btrim(currency), 2, 1))::bigint << 21)
        | ascii(substr(btrim(currency), 3, 1))::bigint) STORED,
    ADD COLUMN posted_day bigint GENERATED ALWAYS AS (((posted_at AT TIME ZONE 'UTC')::date - (DATE '0001-01-01' - 1))) STORED;

