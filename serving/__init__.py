"""The Scorer, the online service and batch scoring with write-back sinks."""
