"""The online replay of ``benchmarks/online.py``: versions trained and exported
(:mod:`.versions`), listeners replayed through the gateway with feedback (:mod:`.replay`), the
scenarios (:mod:`.scenarios`) and the quality-gate picture (:mod:`.plot`)."""
