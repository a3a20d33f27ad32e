// Applied before the first paint (loaded synchronously in <head>, not a module): the theme the
// person chose (System / Light / Dark, kept in localStorage) as <html data-theme>, so the page
// never flashes the other palette. main.js changes it through the same key.
(function () {
  var choice = "system";
  try {
    var stored = window.localStorage.getItem("tbd-agents.theme");
    if (stored === "light" || stored === "dark" || stored === "system") choice = stored;
  } catch (e) {
    // Storage can be refused (privacy settings): the system preference applies.
  }
  document.documentElement.setAttribute("data-theme", choice);
})();
