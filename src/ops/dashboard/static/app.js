// The dashboard's one script: live counts over server-sent events (/ui/events), with a pause
// that is remembered for the tab and applied when the tab is hidden. Every page works without
// it. It writes only text (textContent), never markup.
(function () {
  'use strict';
  var slot = document.querySelector('[data-live]');
  if (!slot || !window.EventSource) { return; }
  var source = null;
  var paused = window.sessionStorage.getItem('steadfast-live') === 'paused';
  var button = document.createElement('button');
  button.type = 'button';
  button.className = 'live';
  slot.appendChild(button);

  function label() {
    button.textContent = paused ? 'Live updates paused: resume' : 'Live: pause';
    button.setAttribute('aria-pressed', String(paused));
  }

  function apply(data) {
    document.querySelectorAll('[data-count]').forEach(function (el) {
      var parts = el.getAttribute('data-count').split('|');
      var agent = data.agents[parts[0]];
      var n = agent ? (parts[1] === 'total' ? agent.total : agent.states[parts[1]]) : 0;
      el.textContent = n ? String(n) : '·';
    });
    document.querySelectorAll('[data-badge]').forEach(function (el) {
      var n = data[el.getAttribute('data-badge')];
      el.textContent = n ? String(n) : '';
    });
  }

  function start() {
    if (source || paused || document.hidden) { return; }
    source = new EventSource('/ui/events');
    source.addEventListener('counts', function (event) { apply(JSON.parse(event.data)); });
  }

  function stop() {
    if (source) { source.close(); source = null; }
  }

  button.addEventListener('click', function () {
    paused = !paused;
    window.sessionStorage.setItem('steadfast-live', paused ? 'paused' : 'live');
    if (paused) { stop(); } else { start(); }
    label();
  });
  document.addEventListener('visibilitychange', function () {
    if (document.hidden) { stop(); } else { start(); }
  });
  label();
  start();
}());
