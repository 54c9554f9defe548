-- Redrive: a request still PROCESSING past the redrive age is re-published from here. Each request
-- counts its redrives and remembers the last, so it is re-published at most once per age.
ALTER TABLE requests
    ADD COLUMN redrive_count integer NOT NULL DEFAULT 0,
    ADD COLUMN redriven_at   timestamptz;

-- Queue stats sum the redrives without scanning every retained request.
CREATE INDEX requests_redriven ON requests (redrive_count) WHERE redrive_count > 0;
