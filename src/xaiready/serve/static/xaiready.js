/* xaiready serve: follow a job's server-sent events on its page, and refresh lists while jobs run. */
(function () {
  function follow(el) {
    var id = el.getAttribute("data-follow-job");
    var bar = el.querySelector("[data-progress-bar]");
    var text = el.querySelector("[data-progress-text]");
    var state = el.querySelector("[data-progress-state]");
    var source = new EventSource("/jobs/" + encodeURIComponent(id) + "/events");
    function show(ev) {
      var job = JSON.parse(ev.data);
      if (bar) bar.style.width = Math.round(100 * (job.progress || 0)) + "%";
      if (text) text.textContent = job.message || (job.status === "queued" ? "waiting for a worker" : "");
      if (state) { state.textContent = job.status; state.className = "badge " + job.status; }
    }
    source.addEventListener("progress", show);
    ["done", "failed"].forEach(function (name) {
      source.addEventListener(name, function (ev) { show(ev); source.close(); window.location.reload(); });
    });
  }
  document.querySelectorAll("[data-follow-job]").forEach(follow);
  // A list with running jobs refreshes its own section in place (a form beside it keeps what was typed).
  function refreshLater() {
    var marker = document.querySelector("[data-refresh-ms]");
    if (!marker) return;
    var target = marker.getAttribute("data-refresh-target");
    setTimeout(function () {
      fetch(window.location.href, {credentials: "same-origin"}).then(function (r) {
        if (r.redirected || !r.ok) { window.location.reload(); return null; }
        return r.text();
      }).then(function (html) {
        if (html === null) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var mine = document.querySelector(target), theirs = fresh.querySelector(target);
        if (!mine || !theirs) { window.location.reload(); return; }
        mine.innerHTML = theirs.innerHTML;
        if (!fresh.querySelector("[data-refresh-ms]")) marker.remove();
        refreshLater();
      }).catch(function () { refreshLater(); });
    }, parseInt(marker.getAttribute("data-refresh-ms"), 10));
  }
  refreshLater();
})();
