-- Entries name their transfer and account by id without foreign keys: PostgreSQL checks a foreign key
-- row by row, which cost a quarter of posting time in `make bench`. Entries have one writer, which
-- inserts the transfer first and holds both accounts' row locks; nothing deletes transfers or
-- accounts; and `payrecon ledger verify` checks that every entry names an existing transfer and
-- account (besides the hash chains and the totals).
ALTER TABLE entries DROP CONSTRAINT entries_transfer_id_fkey;
ALTER TABLE entries DROP CONSTRAINT entries_account_id_fkey;
