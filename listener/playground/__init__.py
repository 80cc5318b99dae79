"""The playground: everything `listener demo`, the tests and the benchmarks run the listener
against on one machine (an embedded Postgres, a local S3, an AI server simulator and its
sample files). The listener itself never imports it."""
