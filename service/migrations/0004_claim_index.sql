-- The claim takes the oldest runnable jobs (ORDER BY id ... LIMIT n FOR UPDATE SKIP LOCKED).
-- With only the primary key to walk, every claim stepped over each finished job first: on a
-- queue holding 200k done rows, 62 ms per claim instead of 0.1 ms. This index holds the live
-- jobs alone, in claim order, so a claim reads about as many rows as it takes.
CREATE INDEX background_jobs_claim_idx ON background_jobs (id) WHERE status IN ('queued', 'running');
