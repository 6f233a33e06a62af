-- Each background-jobs tick first fails the jobs whose lease expired on their last attempt
-- (status = 'running' AND locked_until < now() AND attempts >= max). With no index to find
-- the running jobs, that statement read the whole table on every tick: 3.8 ms on 48k rows,
-- growing with every finished job kept, about a seventh of a 200-job tick in the drain
-- ceiling. Only the jobs in flight are running, so this index is small and the statement
-- reads about as many rows as it fails.
CREATE INDEX background_jobs_lease_idx ON background_jobs (locked_until) WHERE status = 'running';
