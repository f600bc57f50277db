"""Many tracks: job files and manifests, the Dask batch and its clusters, the unit a worker runs, the demo catalogue."""
