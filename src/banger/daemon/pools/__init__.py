"""Pools of ready guests: a template snapshot per pool and N re-identified restores
kept running, handed out by ``vm create/run --pool`` (:mod:`.service`)."""
