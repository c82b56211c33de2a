"""The data side: contracts, sample data, ingest, identity resolution, features, KPIs."""
