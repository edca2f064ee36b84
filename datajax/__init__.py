"""DataJAX: MPI batch jobs and a small tracing dataframe library."""

__version__ = "0.1.0"
