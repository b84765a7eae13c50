// Shows every <time datetime> in the viewer's own time zone; the page stays readable without it.
document.querySelectorAll("time[datetime]").forEach(function (t) {
  var d = new Date(t.getAttribute("datetime"));
  if (!isNaN(d)) { t.title = t.textContent; t.textContent = d.toLocaleString(); }
});
