-- hipconnect's PostgreSQL schema, version 2: several nodes on one database
-- (see package pgstore, Lease). Every node is equal; an installation's jobs
-- are delivered by the one node holding its lease. Times are the
-- database's clock, which all nodes share.

-- +goose Up

-- The nodes' heartbeats: a node is live while its heartbeat is younger
-- than the lease ttl; a heartbeat ten times older is deleted.
CREATE TABLE nodes (
    name text COLLATE "C" PRIMARY KEY,
    seen timestamptz NOT NULL
);

-- The leases: node delivers the installation's jobs until expires, which
-- it pushes on at every lease round. An expired lease is anyone's to take.
CREATE TABLE leases (
    oauth_id text COLLATE "C" PRIMARY KEY REFERENCES installations ON DELETE CASCADE,
    node     text COLLATE "C" NOT NULL,
    expires  timestamptz NOT NULL
);
CREATE INDEX leases_node ON leases (node);

-- +goose Down
DROP TABLE leases;
DROP TABLE nodes;
