"use strict";
// Tables of the report: a click on a header sorts by that column (again: the other way), numbers by
// value (a cell's data-sort holds the full value), empty cells last; the box above a table hides the
// rows that do not contain what is typed.
(function () {
  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  function sortKey(cell, numeric) {
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
    if (raw === "") return null;
    if (!numeric) return raw;
    var value = parseFloat(raw);
    return isNaN(value) ? null : value;
  }

  function sortTable(table, header, index) {
    var numeric = header.getAttribute("data-type") === "number";
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach(function (other) { other.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.from(body.rows).map(function (row, position) {
      return { row: row, position: position, key: sortKey(row.cells[index], numeric) };
    });
    rows.sort(function (a, b) {
      if (a.key === null || b.key === null) {
        return a.key === b.key ? a.position - b.position : a.key === null ? 1 : -1;
      }
      var order = numeric ? a.key - b.key : collator.compare(a.key, b.key);
      return (ascending ? order : -order) || a.position - b.position;
    });
    rows.forEach(function (item) { body.appendChild(item.row); });
  }

  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (header, index) {
      header.querySelector("button").addEventListener("click", function () {
        sortTable(table, header, index);
      });
    });
  });

  document.querySelectorAll("input.filter").forEach(function (input) {
    var table = document.getElementById(input.getAttribute("data-table"));
    var shown = input.parentElement.querySelector(".shown");
    input.addEventListener("input", function () {
      var wanted = input.value.trim().toLowerCase();
      var rows = Array.from(table.tBodies[0].rows);
      var count = 0;
      rows.forEach(function (row) {
        var text = Array.from(row.cells).map(function (cell) { return cell.textContent; }).join("\t");
        row.hidden = wanted !== "" && !text.toLowerCase().includes(wanted);
        count += row.hidden ? 0 : 1;
      });
      shown.textContent = wanted === "" ? "" : count + " of " + rows.length + " rows";
    });
  });
})();
