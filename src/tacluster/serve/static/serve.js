// tacluster serve: the little the pages need beyond HTML forms (selection counts,
// select-all, cluster colours). Served by the package; no other script runs.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const dot of document.querySelectorAll(".dot[data-color]")) dot.style.background = dot.dataset.color;
  const counts = document.querySelectorAll(".count[data-count]");
  const update = () => {
    for (const c of counts) {
      const n = document.querySelectorAll(`input[name="${c.dataset.count}"][form="${c.dataset.form}"]:checked`).length;
      c.textContent = n ? `${n} selected` : "none selected";
    }
    for (const box of document.querySelectorAll('.tile input[name="image"]'))
      box.closest(".tile").classList.toggle("selected", box.checked);
  };
  document.addEventListener("change", update);
  for (const b of document.querySelectorAll("button[data-select]")) {
    b.addEventListener("click", () => {
      for (const box of document.querySelectorAll('input[name="image"][form="selection"]')) box.checked = b.dataset.select === "all";
      update();
    });
  }
  update();
});
