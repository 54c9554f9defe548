-- The configurable schema (services/ledger/domain/schema.py): every applied version is kept for ever,
-- with who applied it and when; the version in force is the highest. Accounts remember the class they
-- were opened under, transfers the type they were posted as and the version that allowed them. The
-- new columns are NULL for everything posted with no schema: nothing existing is rewritten.
CREATE TABLE schema_versions (
    version integer PRIMARY KEY CHECK (version > 0),
    document jsonb NOT NULL,
    applied_by text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION schema_versions_are_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'schema versions are kept for ever: % refused', TG_OP;
END
$$;

CREATE TRIGGER schema_versions_are_kept BEFORE UPDATE OR DELETE ON schema_versions
    FOR EACH ROW EXECUTE FUNCTION schema_versions_are_kept();

-- The version in force, one row: a posting reads it FOR KEY SHARE (concurrent postings do not block
-- each other), a new version is applied under FOR UPDATE, which waits for postings in flight and
-- holds new ones back until it commits; they then read the new version.
CREATE TABLE schema_in_force (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version integer NOT NULL DEFAULT 0
);
INSERT INTO schema_in_force DEFAULT VALUES;

ALTER TABLE accounts ADD COLUMN account_class text;
ALTER TABLE transfers ADD COLUMN transfer_type text, ADD COLUMN schema_version integer;
