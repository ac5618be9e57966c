-- hipconnect's PostgreSQL schema, version 1 (see package pgstore).
--
-- Text keys are COLLATE "C", so that they sort in byte order as the store
-- contract wants. Times are timestamptz (microseconds), except the pacing
-- windows' send times, kept to the nanosecond as Unix nanoseconds.

-- +goose Up

-- Facts about the database itself: "secrets" holds the key check (a known
-- text, encrypted), present exactly when the secrets are encrypted.
CREATE TABLE meta (
    name  text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE installations (
    oauth_id         text COLLATE "C" PRIMARY KEY,
    oauth_secret     text NOT NULL, -- "enc:v1:..." when the secrets are encrypted
    capabilities_url text NOT NULL,
    group_id         bigint NOT NULL,
    room_id          bigint NOT NULL, -- 0: a global install
    api_url          text NOT NULL,
    token_url        text NOT NULL,
    hipchat_origin   text NOT NULL,
    integration      text NOT NULL,
    installed_at     timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);

CREATE TABLE tokens (
    oauth_id     text COLLATE "C" PRIMARY KEY REFERENCES installations ON DELETE CASCADE,
    access_token text NOT NULL, -- "enc:v1:..." when the secrets are encrypted
    scope        text NOT NULL,
    expires_at   timestamptz NOT NULL
);

-- The IDs of jobs, shared by the outbox and the dead letters: increasing,
-- never reused.
CREATE SEQUENCE job_ids AS bigint;

-- The outbox: jobs acknowledged and not yet delivered.
CREATE TABLE jobs (
    id            bigint PRIMARY KEY,
    oauth_id      text COLLATE "C" NOT NULL REFERENCES installations ON DELETE CASCADE,
    room_id       bigint NOT NULL,
    message_id    text NOT NULL,
    message_date  timestamptz, -- NULL: HipChat sent none
    command       text NOT NULL,
    args          text NOT NULL,
    sender        text NOT NULL,
    received      timestamptz NOT NULL,
    reply         json, -- addon.Notification; json, not jsonb, so any text fits
    response_only boolean NOT NULL,
    attempts      integer NOT NULL,
    last_error    text NOT NULL
);
CREATE INDEX jobs_oauth_id ON jobs (oauth_id, id);

CREATE TABLE dead_letters (
    id            bigint PRIMARY KEY, -- the job's ID
    oauth_id      text COLLATE "C" NOT NULL REFERENCES installations ON DELETE CASCADE,
    room_id       bigint NOT NULL,
    message_id    text NOT NULL,
    message_date  timestamptz,
    command       text NOT NULL,
    args          text NOT NULL,
    sender        text NOT NULL,
    received      timestamptz NOT NULL,
    reply         json,
    response_only boolean NOT NULL,
    attempts      integer NOT NULL,
    last_error    text NOT NULL,
    reason        text NOT NULL,
    buried_at     timestamptz NOT NULL
);
CREATE INDEX dead_letters_oauth_id ON dead_letters (oauth_id);
CREATE INDEX dead_letters_buried_at ON dead_letters (buried_at);

-- The message ids seen, for dropping duplicate deliveries: the primary key
-- is the dedupe (Enqueue inserts here with ON CONFLICT DO NOTHING in the
-- transaction that stores the job). message_date is the Unix epoch when
-- HipChat sent no date.
CREATE TABLE seen (
    oauth_id     text COLLATE "C" NOT NULL REFERENCES installations ON DELETE CASCADE,
    message_date timestamptz NOT NULL,
    message_id   text NOT NULL,
    job_id       bigint NOT NULL, -- the job it made (maybe delivered and gone)
    received     timestamptz NOT NULL,
    PRIMARY KEY (oauth_id, message_date, message_id)
);
CREATE INDEX seen_message_date ON seen (message_date);

-- The key/value namespaces (certmagic's storage is namespace "certmagic").
CREATE TABLE kv (
    namespace text COLLATE "C" NOT NULL,
    key       text COLLATE "C" NOT NULL,
    value     bytea NOT NULL,
    modified  timestamptz NOT NULL,
    PRIMARY KEY (namespace, key)
);
-- For removing an installation's keys (under its prefix) in every namespace.
CREATE INDEX kv_key ON kv (key);

-- The delivery pacer's windows; room 0 is the installation's token budget.
CREATE TABLE pacing (
    oauth_id text COLLATE "C" NOT NULL REFERENCES installations ON DELETE CASCADE,
    room     bigint NOT NULL,
    times    bigint[] NOT NULL, -- send times, Unix nanoseconds
    PRIMARY KEY (oauth_id, room)
);

-- certmagic's locks: a row is a lock, held by owner until expires (by the
-- database's clock); its holder pushes expires on while it holds it.
CREATE TABLE certmagic_locks (
    name    text COLLATE "C" PRIMARY KEY,
    owner   text NOT NULL,
    expires timestamptz NOT NULL
);

-- +goose Down
DROP TABLE certmagic_locks;
DROP TABLE pacing;
DROP TABLE kv;
DROP TABLE seen;
DROP TABLE dead_letters;
DROP TABLE jobs;
DROP SEQUENCE job_ids;
DROP TABLE tokens;
DROP TABLE installations;
DROP TABLE meta;
