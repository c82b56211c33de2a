"""custlens: self-hosted customer intelligence (profiles, features, models, scores, KPIs)."""

__version__ = "0.1.0"
