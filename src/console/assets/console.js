// tlsinspect console: optional enhancement. Pages work without it; this only
// recomputes the quota of the scope being edited while the operator types.
"use strict";
(function () {
  function count(text) {
    return text.split(/[\s,]+/).filter(function (e) { return e.length > 0; }).length;
  }
  function fmt(n) { return n.toLocaleString("en-US"); }
  function update() {
    var box = document.querySelector("[data-others]");
    if (!box) { return; }
    var policy = 0;
    document.querySelectorAll("[data-scope]").forEach(function (scope) {
      var q = 1;
      scope.querySelectorAll("textarea[data-list]").forEach(function (t) {
        var n = count(t.value);
        q *= n;
        var c = scope.querySelector('[data-count="' + t.dataset.list + '"]');
        if (c) { c.textContent = n + " entered."; }
      });
      var out = scope.querySelector("[data-scope-quota]");
      if (out) { out.textContent = fmt(q); }
      policy += q;
    });
    var others = parseInt(box.dataset.others, 10) || 0;
    var limit = parseInt(box.dataset.limit, 10) || 20000;
    var total = others + policy;
    var p = document.querySelector("[data-policy-quota]");
    if (p) { p.textContent = fmt(policy); }
    var t = document.querySelector("[data-total-quota]");
    if (t) {
      t.textContent = fmt(total) + " of " + fmt(limit) + (total > limit ? " — over the limit" : "");
      t.classList.toggle("warn", total > limit);
    }
  }
  document.addEventListener("input", function (e) {
    if (e.target.matches && e.target.matches("textarea[data-list]")) { update(); }
  });
  document.addEventListener("DOMContentLoaded", update);
})();
