"""The client library: SharedJobCluster and DispyJob."""
