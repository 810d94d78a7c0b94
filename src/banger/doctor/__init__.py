"""``banger doctor``: named preflight checks, each with a status, a detail and a fix.

- :mod:`.model`: what a check is given (:class:`~.model.DoctorContext`) and
  returns (:class:`~.model.CheckResult`);
- :mod:`.checks`: the host checks, their order and the concurrent runner;
- :mod:`.dns`, :mod:`.reconcile`, :mod:`.taps`: the checks with their own
  facts to gather ("vm dns", "reconciliation", "stray taps");
- :mod:`.reconcile_report`: ``state/reconcile.json``, written by bangerd at
  every start and read by the "reconciliation" check.

The package imports nothing itself, so bangerd imports the report's module
without loading the checks.
"""
