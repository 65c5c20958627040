// Operator dashboard: live refresh of the jobs table, confirmations, chart tooltips.
"use strict";
(function () {
  // Native tooltips on chart points: pygal puts each value in a <desc class="value">.
  document.querySelectorAll("svg.pygal-chart desc.value").forEach(function (desc) {
    var title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = desc.textContent;
    desc.parentNode.insertBefore(title, desc);
  });

  document.addEventListener("submit", function (ev) {
    var msg = ev.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) ev.preventDefault();
  });

  document.querySelectorAll("select[data-autosubmit]").forEach(function (sel) {
    sel.addEventListener("change", function () {
      var project = sel.form.querySelector("select[name=project]");
      if (project) project.value = "";
      sel.form.submit();
    });
  });

  // The job page's output tail: a Refresh button, and a live refresh while the job runs.
  var outputs = document.querySelectorAll("pre[data-url]");
  async function refreshOutput() {
    for (var i = 0; i < outputs.length; i++) {
      var pre = outputs[i];
      try {
        var r = await fetch(pre.getAttribute("data-url"), {credentials: "same-origin"});
        if (r.redirected) { window.location.reload(); return; }
        if (r.ok) { pre.textContent = (await r.text()) || "(empty)"; pre.setAttribute("data-refreshed", Date.now()); }
      } catch (e) { /* the next tick retries */ }
    }
  }
  document.querySelectorAll("[data-refresh-output]").forEach(function (b) {
    b.addEventListener("click", refreshOutput);
  });
  var outputLive = document.getElementById("output-live");
  if (outputs.length && outputLive) {
    setInterval(function () { if (outputLive.checked && !document.hidden) refreshOutput(); },
                window.OPS_REFRESH_MS || 5000);
  }

  var body = document.getElementById("job-rows");
  var every = window.OPS_REFRESH_MS || 5000;
  var live = document.getElementById("live");
  if (!body || !live) return;
  async function refresh() {
    if (!live.checked || document.hidden) return;
    try {
      var resp = await fetch(body.getAttribute("data-rows-url"), {credentials: "same-origin"});
      if (resp.redirected || resp.status === 401 || resp.status === 303) { window.location.reload(); return; }
      if (resp.ok) { body.innerHTML = await resp.text(); body.setAttribute("data-refreshed", Date.now()); }
    } catch (e) { /* the next tick retries */ }
  }
  setInterval(refresh, every);
})();
