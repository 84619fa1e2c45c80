-- Developers' local history pushed by `flowrun sync`, upserted by (kind, id).
CREATE TABLE synced_records (
    kind        TEXT COLLATE "C" NOT NULL,
    id          TEXT COLLATE "C" NOT NULL,
    hash        TEXT NOT NULL,
    record      TEXT NOT NULL,
    pushed_by   TEXT COLLATE "C" NOT NULL,
    pushed_at   BIGINT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX synced_records_by_push ON synced_records(pushed_at DESC);
