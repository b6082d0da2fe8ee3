// Run page: follow a running run's log live (server-sent events) and highlight #L1-3 ranges.
"use strict";
(function () {
  const run = document.getElementById("run");
  if (!run) return;

  function highlight() {
    document.querySelectorAll(".log > div.hl").forEach((el) => el.classList.remove("hl"));
    const m = /^#(A\d+)?L(\d+)(?:-L?(\d+))?$/.exec(location.hash);
    if (!m) return;
    const prefix = m[1] || "";
    const from = Number(m[2]);
    const to = Number(m[3] || m[2]);
    for (let n = Math.min(from, to); n <= Math.max(from, to); n++) {
      const el = document.getElementById(prefix + "L" + n);
      if (el) el.classList.add("hl");
    }
    const first = document.getElementById(prefix + "L" + Math.min(from, to));
    if (first) first.scrollIntoView({ block: "center" });
  }
  let anchorStart = null;
  document.addEventListener("click", (event) => {
    const a = event.target.closest ? event.target.closest(".log > div > a:first-child") : null;
    if (!a) return;
    const name = a.getAttribute("href").slice(1);
    if (event.shiftKey && anchorStart && anchorStart.replace(/L\d+$/, "") === name.replace(/L\d+$/, "")) {
      event.preventDefault();
      const end = name.replace(/^.*L/, "");
      history.replaceState(null, "", "#" + anchorStart + "-" + end);
      highlight();
      return;
    }
    anchorStart = name;
  });
  window.addEventListener("hashchange", highlight);
  highlight();

  if (run.dataset.live !== "yes" || !window.EventSource) return;
  const logs = document.getElementById("logs");
  function logFor(attempt) {
    let log = document.getElementById("log-" + attempt);
    if (log) return log;
    const none = document.getElementById("nolog");
    if (none) none.remove();
    const section = document.createElement("section");
    section.className = "attempt";
    section.id = "attempt-" + attempt;
    const title = document.createElement("h3");
    title.textContent = "Attempt " + attempt;
    section.appendChild(title);
    log = document.createElement("div");
    log.className = "log";
    log.id = "log-" + attempt;
    section.appendChild(log);
    logs.appendChild(section);
    return log;
  }
  const sections = document.querySelectorAll(".attempt");
  let attempt = 1;
  let seen = 0;
  if (sections.length) {
    const last = sections[sections.length - 1];
    attempt = Number(last.dataset.attempt);
    seen = last.querySelectorAll(".log > div").length;
  }
  const url = "/runs/" + encodeURIComponent(run.dataset.run) + "/logs?t=" +
    encodeURIComponent(run.dataset.token) + "&from=" + attempt + ":" + seen;
  const source = new EventSource(url);
  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  }
  source.addEventListener("lines", (event) => {
    const follow = nearBottom();
    const rows = JSON.parse(event.data);
    let html = "";
    let current = null;
    for (const [a, n, text] of rows) {
      if (current !== null && a !== current) {
        logFor(current).insertAdjacentHTML("beforeend", html);
        html = "";
      }
      current = a;
      // Same markup as the server's (web/logview.py); `text` is escaped HTML from the server,
      // `a` and `n` are numbers.
      const id = (a === 1 ? "" : "A" + Number(a)) + "L" + Number(n);
      html += '<div id="' + id + '"><a href="#' + id + '">' + Number(n) + "</a>" + text +
        "</div>\n";
    }
    if (current !== null) logFor(current).insertAdjacentHTML("beforeend", html);
    if (follow) window.scrollTo(0, document.body.scrollHeight);
  });
  source.addEventListener("state", (event) => {
    const s = JSON.parse(event.data);
    const badge = document.getElementById("state");
    badge.className = "state s-" + s.state;
    badge.querySelector(".icon").textContent = s.icon;
    badge.querySelector(".word").textContent = s.word;
    document.getElementById("started").textContent = s.started;
    document.getElementById("finished").textContent = s.finished;
    document.getElementById("duration").textContent = s.duration;
    document.title = s.icon + document.title.slice(document.title.indexOf(" "));
    if (s.final) {
      const live = document.getElementById("live");
      if (live) live.textContent = "The run has ended.";
    }
  });
  source.addEventListener("end", () => source.close());
})();
