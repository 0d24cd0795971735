// The hosting pages' one script (a static file: the pages' CSP stays script-src 'self').
// - Copy buttons: <button data-copy="ID"> copies the text of the element ID.
// - Dates: <time class="age" datetime="ISO"> shows "3 days ago" with the full date as its
//   title, the way hgweb's pages (Mercurial's mercurial.js) show theirs.
"use strict";
(function () {
  var scales = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400],
                ["hour", 3600], ["minute", 60], ["second", 1]];

  function age(once) {
    var delta = Math.floor((Date.now() - once.getTime()) / 1000);
    var future = delta < 0;
    if (future) { delta = -delta; }
    if (delta > 2 * scales[0][1]) { return once.toISOString().slice(0, 10); }
    for (var i = 0; i < scales.length; i++) {
      var n = Math.floor(delta / scales[i][1]);
      if (n >= 2 || scales[i][1] === 1) {
        var text = n + " " + scales[i][0] + (n > 1 ? "s" : "");
        return future ? text + " from now" : text + " ago";
      }
    }
    return "";
  }

  function showAges() {
    var nodes = document.querySelectorAll("time.age[datetime]");
    for (var i = 0; i < nodes.length; i++) {
      var once = new Date(nodes[i].getAttribute("datetime"));
      if (isNaN(once.getTime())) { continue; }
      nodes[i].title = nodes[i].textContent;
      nodes[i].textContent = age(once);
    }
  }

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function copied(button, label) {
    var before = button.getAttribute("data-label") || button.textContent;
    button.setAttribute("data-label", before);
    button.textContent = label;
    setTimeout(function () { button.textContent = before; }, 1500);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button[data-copy]") : null;
    if (!button) { return; }
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) { return; }
    var text = source.textContent;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { copied(button, "Copied"); },
        function () { selectText(source); copied(button, "Press Ctrl+C"); });
    } else {
      selectText(source);
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      copied(button, ok ? "Copied" : "Press Ctrl+C");
    }
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", showAges);
  } else {
    showAges();
  }
})();
