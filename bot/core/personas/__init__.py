"""The personas on disk and what describes them: the model store (atomic folders), model cards, and
members' own voices (data packages, erasure)."""
