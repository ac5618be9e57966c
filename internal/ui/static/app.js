/*
 * hipconnect UI script: the sidebar, the search dialog and the
 * configuration page. No inline script anywhere (the pages' CSP forbids
 * it), and nothing from the server is ever parsed as HTML: it is set with
 * textContent. Calls to the add-on carry "Authorization: JWT <token>",
 * the token coming from HipChat.auth.withToken (all.js), or, when all.js
 * is missing or silent, from the signed_request the page was loaded with.
 */
(function () {
  'use strict';

  var body = document.body;
  if (!body || !body.getAttribute('data-page')) {
    return;
  }
  var page = body.getAttribute('data-page');
  var root = body.getAttribute('data-root') || '';
  var fallbackToken = body.getAttribute('data-signed-request') || '';

  function $(id) {
    return document.getElementById(id);
  }

  // withToken calls cb(token) with the freshest JWT available.
  function withToken(cb) {
    var done = false;
    function finish(token) {
      if (!done) {
        done = true;
        cb(token || fallbackToken);
      }
    }
    var hc = window.HipChat;
    if (hc && hc.auth && typeof hc.auth.withToken === 'function') {
      var timer = setTimeout(function () { finish(''); }, 3000);
      try {
        hc.auth.withToken(function (err, token) {
          clearTimeout(timer);
          finish(err ? '' : token);
        });
      } catch (e) {
        clearTimeout(timer);
        finish('');
      }
      return;
    }
    finish('');
  }

  // api calls the add-on's /api/<path> and cb(err, data).
  function api(method, path, payload, cb) {
    withToken(function (token) {
      if (!token) {
        cb(new Error('Your session has expired. Close this view and open it again.'));
        return;
      }
      var xhr = new XMLHttpRequest();
      xhr.open(method, root + 'api/' + path);
      xhr.setRequestHeader('Authorization', 'JWT ' + token);
      xhr.setRequestHeader('Accept', 'application/json');
      if (payload !== undefined) {
        xhr.setRequestHeader('Content-Type', 'application/json');
      }
      xhr.timeout = 30000;
      xhr.onload = function () {
        var data = null;
        try {
          data = JSON.parse(xhr.responseText);
        } catch (e) {
          data = null;
        }
        if (xhr.status >= 200 && xhr.status < 300) {
          cb(null, data);
          return;
        }
        var msg = data && data.error ? data.error : 'The request failed (' + xhr.status + ').';
        if (xhr.status === 401) {
          msg = 'Your session is invalid or has expired. Close this view and open it again.';
        }
        cb(new Error(msg.charAt(0).toUpperCase() + msg.slice(1)));
      };
      xhr.onerror = xhr.ontimeout = function () {
        cb(new Error('The add-on did not answer. Please try again.'));
      };
      xhr.send(payload === undefined ? null : JSON.stringify(payload));
    });
  }

  function setStatus(text, kind) {
    var el = $('status');
    if (!el) {
      return;
    }
    el.textContent = text;
    el.className = 'status' + (kind ? ' ' + kind : '');
  }

  function clear(el) {
    while (el.firstChild) {
      el.removeChild(el.firstChild);
    }
  }

  function el(tag, className, text) {
    var e = document.createElement(tag);
    if (className) {
      e.className = className;
    }
    if (text !== undefined) {
      e.textContent = text;
    }
    return e;
  }

  // link returns an anchor for an http(s) URL, or a plain span.
  function link(title, url) {
    if (!/^https?:\/\//i.test(url || '')) {
      return el('span', '', title);
    }
    var a = el('a', '', title || url);
    a.href = url;
    a.target = '_blank';
    a.rel = 'noopener noreferrer';
    return a;
  }

  function plural(n, one, many) {
    return n === 1 ? one : many;
  }

  // ---- Sidebar ----------------------------------------------------------
  function renderHistory(data) {
    var list = $('history');
    clear(list);
    var searches = (data && data.searches) || [];
    for (var i = 0; i < searches.length; i++) {
      var s = searches[i];
      var li = el('li', 'search');
      var head = el('p', 'search-head');
      head.appendChild(el('span', 'command', '/' + s.command));
      head.appendChild(document.createTextNode(' '));
      head.appendChild(el('strong', 'term', s.term));
      li.appendChild(head);
      var meta = el('p', 'meta');
      var time = el('time', '', new Date(s.at).toLocaleString());
      time.setAttribute('datetime', s.at);
      meta.appendChild(time);
      meta.appendChild(document.createTextNode(' · ' + s.total + ' ' + plural(s.total, 'result', 'results')));
      li.appendChild(meta);
      if (s.hits && s.hits.length) {
        var ul = el('ul', 'hits');
        for (var j = 0; j < s.hits.length; j++) {
          var item = el('li');
          item.appendChild(link(s.hits[j].title, s.hits[j].url));
          ul.appendChild(item);
        }
        li.appendChild(ul);
      }
      list.appendChild(li);
    }
    $('empty').hidden = searches.length > 0;
    var summary = $('summary');
    if (summary && data) {
      clear(summary);
      summary.appendChild(el('strong', '', String(data.weekCount)));
      summary.appendChild(document.createTextNode(' ' + plural(data.weekCount, 'search', 'searches') + ' this week in this room.'));
    }
  }

  function initSidebar() {
    var button = $('refresh');
    button.addEventListener('click', function () {
      button.disabled = true;
      setStatus('Loading…');
      api('GET', 'history', undefined, function (err, data) {
        button.disabled = false;
        if (err) {
          setStatus(err.message, 'error');
          return;
        }
        renderHistory(data);
        setStatus('Updated.', 'ok');
      });
    });
  }

  // ---- Dialog -----------------------------------------------------------
  function initDialog() {
    var form = $('search-form');
    if (!form) {
      return;
    }
    var term = $('term');
    var command = $('command');
    var searchButton = $('search-button');
    var postButton = $('post-button');
    var results = $('results');
    var heading = $('results-heading');
    var last = null; // the search the results show

    function invalidate() {
      last = null;
      postButton.disabled = true;
    }
    term.addEventListener('input', invalidate);
    command.addEventListener('change', invalidate);

    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      var q = { command: command.value, term: term.value.replace(/^\s+|\s+$/g, '') };
      if (!q.term) {
        setStatus('Enter a tag or term to search for.', 'error');
        term.setAttribute('aria-invalid', 'true');
        term.focus();
        return;
      }
      term.removeAttribute('aria-invalid');
      searchButton.disabled = true;
      invalidate();
      setStatus('Searching…');
      api('POST', 'search', q, function (err, data) {
        searchButton.disabled = false;
        clear(results);
        if (err) {
          heading.hidden = true;
          setStatus(err.message, 'error');
          return;
        }
        var hits = data.hits || [];
        for (var i = 0; i < hits.length; i++) {
          var li = el('li');
          li.appendChild(link(hits[i].title, hits[i].url));
          results.appendChild(li);
        }
        heading.textContent = data.total + ' ' + plural(data.total, 'result', 'results') + ' for ' + data.term +
          (data.total > hits.length ? ', showing ' + hits.length : '');
        heading.hidden = false;
        setStatus(data.total ? 'Found ' + data.total + ' ' + plural(data.total, 'result', 'results') + '.' : 'Nothing found.', 'ok');
        last = q;
        postButton.disabled = false;
      });
    });

    postButton.addEventListener('click', function () {
      if (!last) {
        return;
      }
      postButton.disabled = true;
      setStatus('Posting…');
      api('POST', 'post', last, function (err) {
        if (err) {
          postButton.disabled = false;
          setStatus(err.message, 'error');
          return;
        }
        setStatus('Posted to the room.', 'ok');
      });
    });
  }

  // ---- Configuration ----------------------------------------------------
  function initConfigure() {
    var form = $('settings-form');
    var max = $('max-results');
    var save = $('save');
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      var settings = { disabled: {}, maxResults: 0 };
      var boxes = form.querySelectorAll('input[name="enabled"]');
      for (var i = 0; i < boxes.length; i++) {
        if (!boxes[i].checked) {
          settings.disabled[boxes[i].value] = true;
        }
      }
      var raw = max.value.replace(/^\s+|\s+$/g, '');
      if (raw !== '') {
        var n = Number(raw);
        var limit = Number(max.getAttribute('max')) || 50;
        if (!/^\d+$/.test(raw) || n < 1 || n > limit) {
          setStatus('Results shown must be a whole number from 1 to ' + limit + '.', 'error');
          max.setAttribute('aria-invalid', 'true');
          max.focus();
          return;
        }
        settings.maxResults = n;
      }
      max.removeAttribute('aria-invalid');
      save.disabled = true;
      setStatus('Saving…');
      api('PUT', 'settings', settings, function (err) {
        save.disabled = false;
        if (err) {
          setStatus(err.message, 'error');
          return;
        }
        setStatus('Settings saved.', 'ok');
      });
    });
  }

  if (page === 'sidebar') {
    initSidebar();
  } else if (page === 'dialog') {
    initDialog();
  } else if (page === 'configure') {
    initConfigure();
  }
}());
