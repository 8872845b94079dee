// jupyter-remote: shows the idle-stop warning in JupyterLab's notification area.
// Written by hand in the form JupyterLab loads prebuilt ("federated") extensions in: a container
// with init() and get(). It imports no package (it only runs JupyterLab's own commands
// apputils:notify and apputils:dismiss-notification), so it needs no node build, at install time
// or ever. It polls <base_url>jupyter-remote/idle, which the server does not count as activity.
(function () {
  "use strict";
  var POLL_MS = 5000;
  var plugin = {
    id: "jupyter-remote-idle:warning",
    description: "Warns before jupyter-remote stops an idle server.",
    autoStart: true,
    activate: function (app) {
      var shown = null; // {due, id} of the notification on screen
      var base = app.serviceManager.serverSettings.baseUrl.replace(/\/?$/, "/");
      var url = base + "jupyter-remote/idle";
      function show(notice) {
        app.commands.execute("apputils:notify", {
          message: notice.message, type: "warning", options: { autoClose: false }
        }).then(function (id) { shown = { due: notice.due, id: id }; });
      }
      function dismiss() {
        if (shown) {
          app.commands.execute("apputils:dismiss-notification", { id: shown.id });
          shown = null;
        }
      }
      function look() {
        fetch(url, { credentials: "same-origin", cache: "no-store" })
          .then(function (response) { return response.ok ? response.json() : {}; })
          .then(function (notice) {
            if (!notice.message) {
              dismiss();
            } else if (!shown || shown.due !== notice.due) {
              dismiss();
              show(notice);
            }
          })
          .catch(function () { /* the server restarts or stops: the next look tells */ });
      }
      app.restored.then(function () {
        look();
        setInterval(look, POLL_MS);
      });
    }
  };
  var container = {
    init: function () {},
    get: function () {
      return Promise.resolve(function () { return { __esModule: true, default: plugin }; });
    }
  };
  window._JUPYTERLAB = window._JUPYTERLAB || {};
  window._JUPYTERLAB["jupyter-remote-idle"] = container;
})();
