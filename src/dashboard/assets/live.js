// hourglass dashboard: a running run's output, as it grows (server-sent events from the API:
// `output` events carry {"text": ...} from the start of the output, then one `end` event
// carries the run's row). Without this script the page shows the output up to its load.
"use strict";
(function () {
  var pre = document.getElementById("output");
  var state = document.getElementById("live-state");
  if (!pre || !pre.dataset.live || !window.EventSource) { return; }
  // Colours and cursor codes are dropped from live text; the finished page renders them.
  var ansi = /\u001b\[[0-9;?]*[ -\/]*[@-~]/g;
  var fresh = true;
  var source = new EventSource(pre.dataset.live);
  function say(word, text) {
    if (state) { state.dataset.liveState = word; state.textContent = text; }
  }
  source.addEventListener("open", function () {
    fresh = true;
    say("live", "Live: the output below grows as the run writes it.");
  });
  source.addEventListener("output", function (e) {
    var text = JSON.parse(e.data).text.replace(ansi, "");
    if (fresh) { pre.textContent = ""; fresh = false; }
    var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.appendChild(document.createTextNode(text));
    if (atEnd) { pre.scrollTop = pre.scrollHeight; }
  });
  source.addEventListener("end", function (e) {
    source.close();
    var row = JSON.parse(e.data);
    var status = document.getElementById("run-status");
    if (status) { status.dataset.status = row.status; status.textContent = row.status.replace("_", " "); }
    say("ended", "The run ended: " + row.status.replace("_", " ") + ". Reload for its full record.");
  });
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) { say("lost", "The live output stopped; reload the page."); }
  });
}());
