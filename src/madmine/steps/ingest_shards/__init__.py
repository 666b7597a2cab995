"""The parts of an ingest (steps/ingest.py drives them): listing, the plan of what is new,
the shard worker that reads, hashes and probes, the executors, and the promotion of the
workers' parts into the manifest."""
