// sparcom report: hover values, sortable tables, category / layer filters and card rankings. No network, no libraries.
(function () {
  "use strict";
  // Hover values: any element with data-tip.
  var tip = document.createElement("div");
  tip.className = "tip";
  document.body.appendChild(tip);
  document.addEventListener("mouseover", function (event) {
    var target = event.target.closest ? event.target.closest("[data-tip]") : null;
    if (!target) { tip.style.display = "none"; return; }
    tip.textContent = target.getAttribute("data-tip");
    tip.style.display = "block";
  });
  document.addEventListener("mousemove", function (event) {
    if (tip.style.display !== "block") return;
    var x = event.clientX + 14, y = event.clientY + 14;
    if (x + tip.offsetWidth > window.innerWidth - 8) x = event.clientX - tip.offsetWidth - 10;
    if (y + tip.offsetHeight > window.innerHeight - 8) y = event.clientY - tip.offsetHeight - 10;
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  });

  // Sortable tables: click a header; numbers sort by data-v, text by its content.
  function cellKey(cell) {
    if (!cell) return "";
    var v = cell.getAttribute("data-v");
    if (v !== null) return v === "" ? -Infinity : parseFloat(v);
    return cell.textContent.trim().toLowerCase();
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    var headers = table.querySelectorAll("thead th");
    Array.prototype.forEach.call(headers, function (th, column) {
      th.addEventListener("click", function () {
        var descending = !th.classList.contains("desc");
        Array.prototype.forEach.call(headers, function (h) { h.classList.remove("asc", "desc"); });
        th.classList.add(descending ? "desc" : "asc");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = cellKey(a.cells[column]), y = cellKey(b.cells[column]);
          var order = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
          return descending ? -order : order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });

  // Filters: categories (data-cat, space-separated: hidden if any is unticked) and layers (data-layer).
  var boxes = document.querySelectorAll("input[data-filter-cat]");
  var low = document.getElementById("layer-min"), high = document.getElementById("layer-max");
  var status = document.getElementById("filter-status");
  function applyFilters() {
    var off = {};
    Array.prototype.forEach.call(boxes, function (box) { if (!box.checked) off[box.getAttribute("data-filter-cat")] = true; });
    var lo = low ? parseInt(low.value, 10) : NaN, hi = high ? parseInt(high.value, 10) : NaN;
    var hidden = 0;
    Array.prototype.forEach.call(document.querySelectorAll("[data-cat],[data-layer]"), function (el) {
      var hide = false;
      var cats = el.getAttribute("data-cat");
      if (cats) cats.split(" ").forEach(function (c) { if (off[c]) hide = true; });
      var layer = el.getAttribute("data-layer");
      if (layer !== null && layer !== "") {
        var j = parseInt(layer, 10);
        if ((!isNaN(lo) && j < lo) || (!isNaN(hi) && j > hi)) hide = true;
      }
      el.classList.toggle("hidden-filter", hide);
      if (hide && el.tagName === "ARTICLE") hidden += 1;
    });
    if (status) {
      var parts = [];
      var offNames = Object.keys(off);
      if (offNames.length) parts.push(offNames.length + " categor" + (offNames.length === 1 ? "y" : "ies") + " hidden");
      if (low && high && (low.value !== low.min || high.value !== high.max)) parts.push("layers " + low.value + "–" + high.value);
      if (hidden) parts.push(hidden + " cards hidden");
      status.textContent = parts.join(" · ");
    }
  }
  Array.prototype.forEach.call(boxes, function (box) { box.addEventListener("change", applyFilters); });
  [low, high].forEach(function (input) { if (input) input.addEventListener("input", applyFilters); });
  var reset = document.getElementById("reset-filters");
  if (reset) reset.addEventListener("click", function () {
    Array.prototype.forEach.call(boxes, function (box) { box.checked = true; });
    if (low) low.value = low.min;
    if (high) high.value = high.max;
    applyFilters();
  });

  // Card rankings: one button group per card block shows the groups of one score.
  Array.prototype.forEach.call(document.querySelectorAll(".card-controls"), function (controls) {
    var block = controls.parentNode;
    var buttons = controls.querySelectorAll("button[data-score-button]");
    function show(score) {
      Array.prototype.forEach.call(buttons, function (b) { b.classList.toggle("on", b.getAttribute("data-score-button") === score); });
      Array.prototype.forEach.call(block.querySelectorAll(".card-group"), function (group) {
        var shown = group.getAttribute("data-score") === score;
        var template = group.querySelector(":scope > template");
        if (shown && template) {
          group.appendChild(template.content.cloneNode(true));
          template.remove();
        }
        group.classList.toggle("hidden-score", !shown);
      });
      applyFilters();
    }
    Array.prototype.forEach.call(buttons, function (b) {
      b.addEventListener("click", function () { show(b.getAttribute("data-score-button")); });
    });
    if (buttons.length) show(buttons[0].getAttribute("data-score-button"));
  });

  // Lazy blocks: a <details> holding a <template> fills itself the first time it is opened.
  document.addEventListener("toggle", function (event) {
    var details = event.target;
    if (!details.open || !details.querySelector) return;
    var template = details.querySelector(":scope > template");
    if (template) {
      details.appendChild(template.content.cloneNode(true));
      template.remove();
    }
  }, true);

  // Contents: mark the section in view.
  var links = {};
  Array.prototype.forEach.call(document.querySelectorAll("#toc a"), function (a) { links[a.getAttribute("href").slice(1)] = a; });
  if ("IntersectionObserver" in window) {
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        var link = links[entry.target.id];
        if (link && entry.isIntersecting) {
          Array.prototype.forEach.call(document.querySelectorAll("#toc a.active"), function (a) { a.classList.remove("active"); });
          link.classList.add("active");
        }
      });
    }, { rootMargin: "-60px 0px -70% 0px" });
    Object.keys(links).forEach(function (id) { var el = document.getElementById(id); if (el) observer.observe(el); });
  }
  document.documentElement.setAttribute("data-ready", "1");
})();
