// The one event stream for every run on screen (GET /api/events): the server sends each run's
// layer names, replays its rows, then follows them as training appends more.

export function follow(runs, { panel, opened, status, ended }) {
  // An EventSource for `runs` whose events go to `panel(run)` (undefined: not on screen any
  // more); `opened()` when it (re)connects, `status()` after a run's status, `ended(stopped)`
  // at the end (stopped: the server was shut down).
  const source = new EventSource(`/api/events?runs=${runs.map(encodeURIComponent).join(",")}`);
  source.addEventListener("open", opened);
  const each = (name, handle) =>
    source.addEventListener(name, (event) => {
      const data = JSON.parse(event.data);
      const target = panel(data.run);
      if (target) handle(target, data);
    });
  each("layers", (target, data) => target.setNames(data.weighted, data.hidden));
  each("row", (target, data) => target.add(data.row));
  each("reset", (target) => target.reset()); // the run started afresh or resumed from a checkpoint
  each("verdict", (target, data) => target.setVerdict(data.headline));
  each("ranks", (target, data) => target.setRanks(data.header, data.rows, data.note)); // a data-parallel run's
  each("status", (target, data) => {
    target.setStatus(data.status, data.note); // note: e.g. "in another process (pid N)"
    status();
  });
  each("unreadable", (target, data) => {
    // a damaged record: the server says why and ends this run's part of the stream
    target.setStatus("unreadable");
    target.setVerdict(`cannot read this run: ${data.error}`);
    status();
  });
  source.addEventListener("end", (event) => {
    source.close();
    ended(JSON.parse(event.data).server === "stopped");
  });
  return source;
}
