-- The gateway's schema in PostgreSQL: the ledger (files, reports), the sync history, nodes and leases.
-- Applied once by gateway/store/migrate.py, in one transaction with its schema_version row.

CREATE TABLE files (
    file_id text PRIMARY KEY,
    station text, transfer_code text, name text, sha256 text, size bigint,
    state text NOT NULL DEFAULT 'claimed',
    table_code text, institution text, data_date text, part integer, batch integer, mode text,
    claimed_at timestamptz, updated_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0, next_attempt_at timestamptz, outcome text,
    grp integer,          -- the lease group of transfer_code
    epoch bigint,         -- the lease epoch of the last write (NULL: an operator tool's write)
    node_id text          -- the node that made it
);
CREATE INDEX files_by_content ON files (station, name, sha256);
CREATE INDEX files_by_state ON files (state, station);

CREATE TABLE reports (
    station text NOT NULL, institution text NOT NULL, table_code text NOT NULL,
    data_date text NOT NULL, part integer NOT NULL,
    batch integer NOT NULL, sha256 text NOT NULL,
    file_id text NOT NULL REFERENCES files (file_id), accepted_at timestamptz NOT NULL,
    PRIMARY KEY (station, institution, table_code, data_date, part)
);
CREATE INDEX reports_by_file ON reports (file_id);

CREATE TABLE history (
    seq bigserial PRIMARY KEY,
    ts timestamptz NOT NULL,
    event text NOT NULL,
    file_id text,
    station text,
    transfer_code text,
    node_id text,
    line text NOT NULL    -- the event as the JSON Lines history writes it (text: jsonb refuses the
                          -- escaped lone surrogates of undecodable names)
);
CREATE INDEX history_by_ts ON history (ts);
CREATE INDEX history_by_file ON history (file_id);

CREATE TABLE nodes (
    node_id text PRIMARY KEY,
    host text NOT NULL, pid integer NOT NULL,
    started_at timestamptz NOT NULL,
    seen_at timestamptz NOT NULL,
    leaving boolean NOT NULL DEFAULT false
);

CREATE TABLE leases (
    grp integer PRIMARY KEY,
    node_id text,
    epoch bigint NOT NULL DEFAULT 0,
    expires_at timestamptz,
    acquired_at timestamptz,
    renewed_at timestamptz
);

-- Fencing: a write made by a daemon names its node and the epochs of the leases it believes it holds
-- (SET LOCAL fdep.node / fdep.epochs, one JSON object group -> epoch per transaction). A file row may be
-- written only while that node holds the row's group at that epoch and the lease has not expired, by
-- PostgreSQL's clock. FOR KEY SHARE makes a takeover (which locks the row FOR UPDATE before it bumps the
-- epoch) wait for the write to commit, while the holder's own renewals (no key change) never wait for its
-- writes, nor its writes for its renewals: no deadlock between a node's beat and its files.
CREATE FUNCTION fdep_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    me text := current_setting('fdep.node', true);
    believed bigint;
    held leases%ROWTYPE;
BEGIN
    IF me IS NULL OR me = '' THEN
        RETURN NEW;  -- an operator tool or a single-node store: not fenced
    END IF;
    IF NEW.grp IS NULL AND TG_OP = 'INSERT' THEN  -- an upsert of a known file names no code: its row's
        SELECT grp INTO NEW.grp FROM files WHERE file_id = NEW.file_id;  -- (the row is updated after this)
    END IF;
    IF NEW.grp IS NULL THEN
        RAISE EXCEPTION 'fenced: file % has no lease group', NEW.file_id USING ERRCODE = 'FD001';
    END IF;
    believed := (current_setting('fdep.epochs')::jsonb ->> NEW.grp::text)::bigint;
    SELECT * INTO held FROM leases WHERE grp = NEW.grp FOR KEY SHARE;
    IF believed IS NULL OR NOT FOUND OR held.node_id IS DISTINCT FROM me OR held.epoch <> believed
       OR held.expires_at <= clock_timestamp() THEN
        RAISE EXCEPTION 'fenced: node % epoch % for group % (held by % at epoch %)',
            me, believed, NEW.grp, held.node_id, held.epoch USING ERRCODE = 'FD001';
    END IF;
    NEW.epoch := believed;
    NEW.node_id := me;
    RETURN NEW;
END $$;

CREATE TRIGGER files_fenced BEFORE INSERT OR UPDATE ON files FOR EACH ROW EXECUTE FUNCTION fdep_fence();
