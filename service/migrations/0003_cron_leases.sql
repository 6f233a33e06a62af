-- Background work must not amplify load: a claimed job carries the token of its claim, so
-- only the worker that holds the lease may mark it done or retried; and one tick per cron
-- runs at a time (a lease row, not a held connection).
ALTER TABLE background_jobs ADD COLUMN lease_token bigint;

CREATE TABLE cron_leases (
    name    text        PRIMARY KEY,
    holder  bigint      NOT NULL,
    until   timestamptz NOT NULL
);
