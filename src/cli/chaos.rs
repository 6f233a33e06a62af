//! `incident-lab chaos list`: the fault kinds.

/// `chaos list`: every fault kind, its parameters and what it does.
pub(super) fn chaos_list() -> String {
    let mut out = String::from(
        "Faults on a scenario's timeline: on the database link (through a TCP proxy between the\nservice and Postgres; they reach connections already open), on Postgres itself, on a fake\nprovider, on the service. In a scenario:\n\n  [[faults]]\n  at = \"5s\"        # on the load's clock\n  for = \"8s\"       # how long (none for reset and restart)\n  kind = \"latency\"\n  latency = \"40ms\"\n  jitter = \"10ms\"\n\nor on the command line: --fault at=5s,for=8s,kind=latency,latency=40ms\n\n",
    );
    for (kind, params, what) in crate::model::FaultKind::ALL {
        out.push_str(&format!(
            "{:<13} {what}\n{:<13} parameters: {params}\n",
            kind.name(),
            ""
        ));
    }
    out.push_str("\nOverlapping link faults combine (the worst of each). Everything is undone when the load ends,\nor on an error or Ctrl-C: the link healed, Postgres resumed, locks released, providers restored.\nA run with faults checks that every acknowledged EMAIL_SENT is applied exactly once, in every arm.\n\nFlag flips, through the service's /admin/flags:\n\n  [[flips]]\n  at = \"10s\"\n  flag = \"INBOXXIA_EMAIL_SENT_ASYNC\"\n  to = true\n  validate = [\"queue_writes\"]   # optional: checked just before; no flip if it fails\n\n  (or --flip at=10s,flag=INBOXXIA_EMAIL_SENT_ASYNC,to=true)\n\nEach flip reports, per budget, the time to recover and the time to degrade.\n\nThe steady-state hypothesis:\n\n  [hypothesis]\n  recover_within = \"4s\"   # after the last fault or flip, every budget holds again within this\n  max_failed_pct = 1.0     # most failed requests per endpoint for a stretch to be steady\n\nBefore the first fault or flip the budgets must hold, or the load stops there (\"not steady\",\nexit 1); during, the deviation is recorded; after, recovery is judged.\n");
    out
}
