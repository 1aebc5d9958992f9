/* Usher's web console: the agent inbox and the manager's live board.
 * Plain JavaScript, no dependencies, served by usher serve itself. It speaks the /v1 API with
 * the session cookie (changes carry X-Usher-Console, which cross-site forms cannot send) and
 * follows /v1/stream for live updates. Everything a user typed is shown with textContent. */
(function () {
  "use strict";
  var app = document.getElementById("app");
  var me = null;           // GET /v1/session
  var view = "mine";       // mine | unassigned | board | conversation
  var open = null;         // the conversation shown
  var unseen = 0;          // assignments that arrived since "Mine" was last looked at
  var source = null;
  var refreshTimer = null;
  var notice = "";         // what happened to the last Join, kept across live re-renders

  // ---- helpers ----
  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { e.textContent = attrs[k]; }
      else if (k.slice(0, 2) === "on") { e.addEventListener(k.slice(2), attrs[k]); }
      else if (attrs[k] !== null && attrs[k] !== undefined && attrs[k] !== false) { e.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) { if (c) { e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); } });
    return e;
  }
  function api(method, path, body) {
    var opts = { method: method, credentials: "same-origin", headers: { "x-usher-console": "1" } };
    if (body !== undefined) { opts.headers["content-type"] = "application/json"; opts.body = JSON.stringify(body); }
    return fetch(path, opts).then(function (r) {
      if (r.status === 204) { return null; }
      return r.json().then(function (j) {
        if (!r.ok) { var e = new Error((j.error && j.error.message) || ("HTTP " + r.status)); e.status = r.status; e.code = j.error && j.error.code; throw e; }
        return j;
      });
    });
  }
  function toast(text) {
    var t = document.getElementById("toast");
    t.textContent = text; t.classList.add("show");
    setTimeout(function () { t.classList.remove("show"); }, 3000);
  }
  function ago(iso) {
    if (!iso) { return ""; }
    var s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    return s < 60 ? s + " s ago" : s < 3600 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
  }
  function duration(s) {
    if (s === null || s === undefined) { return "unknown"; }
    return s < 60 ? s + " s" : Math.round(s / 60) + " min";
  }
  function who(c) { return c.contact.name || c.contact.external_id; }
  function isManager() { return me && (me.login.role === "admin" || me.login.role === "manager"); }
  function isAgent() { return me && me.login.role === "agent"; }

  // ---- signing in ----
  function renderLogin(message) {
    var email = el("input", { id: "login-email", type: "email", autocomplete: "username", required: "required" });
    var password = el("input", { id: "login-password", type: "password", autocomplete: "current-password", required: "required" });
    var error = el("p", { id: "login-error", class: "error", role: "alert", text: message || "" });
    var form = el("form", { class: "card login", onsubmit: function (ev) {
      ev.preventDefault();
      api("POST", "/v1/session", { email: email.value, password: password.value })
        .then(boot)
        .catch(function (e) { error.textContent = e.code === "invalid_login" ? "Wrong e-mail or password." : e.message; });
    } }, [
      el("h1", { text: "Usher" }),
      el("label", { for: "login-email", text: "E-mail" }), email,
      el("label", { for: "login-password", text: "Password" }), password,
      error,
      el("button", { id: "login-submit", class: "primary", type: "submit", text: "Sign in" })
    ]);
    app.replaceChildren(form);
    email.focus();
  }

  // ---- the shell ----
  function tab(id, name, label) {
    return el("button", { id: id, type: "button", "aria-current": view === name ? "page" : null,
      onclick: function () { view = name; open = null; notice = ""; if (name === "mine") { unseen = 0; } render(); } }, label);
  }
  function presenceSwitch() {
    if (!me.agent) { return null; }
    var select = el("select", { id: "presence", "aria-label": "Your presence", onchange: function () {
      api("PUT", "/v1/agents/" + me.agent.id + "/status", { status: select.value })
        .then(function (a) { me.agent = a; toast("You are " + a.status); })
        .catch(function (e) { toast(e.message); });
    } }, ["online", "busy", "away", "offline"].map(function (p) {
      return el("option", { value: p, selected: me.agent.status === p ? "selected" : null, text: p });
    }));
    return el("label", { class: "muted" }, ["Presence ", select]);
  }
  function render() {
    var tabs = [];
    if (isAgent()) {
      tabs.push(tab("nav-mine", "mine", ["Mine", el("span", { id: "mine-badge", class: "badge", text: unseen ? String(unseen) : "" })]));
      tabs.push(tab("nav-unassigned", "unassigned", ["Unassigned"]));
    }
    if (isManager()) {
      tabs.push(tab("nav-board", "board", ["Live board"]));
      tabs.push(tab("nav-reports", "reports", ["Reports"]));
    }
    var header = el("header", { class: "top" }, [
      el("span", { class: "brand", text: "Usher" }),
      presenceSwitch(),
      el("nav", { class: "tabs", "aria-label": "Views" }, tabs),
      el("span", { class: "muted", text: me.login.email }),
      el("button", { id: "signout", type: "button", text: "Sign out", onclick: function () {
        api("DELETE", "/v1/session").then(function () { if (source) { source.close(); } me = null; renderLogin(); });
      } })
    ]);
    var main = el("main", { id: "view" });
    app.replaceChildren(header, main);
    document.title = (unseen ? "(" + unseen + ") " : "") + "Usher console";
    if (view === "conversation" && open) { return showConversation(main, open); }
    if (view === "unassigned") { return showUnassigned(main); }
    if (view === "board") { return showBoard(main); }
    if (view === "reports") { return showReports(main); }
    return showMine(main);
  }
  function refreshSoon() {
    if (view === "reports") { return; } // a report is for a period that has passed; refreshed on request
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(function () {
      // Do not wipe a reply being typed.
      var typing = document.activeElement && document.activeElement.id === "reply-text" && document.activeElement.value;
      if (!typing) { render(); }
    }, 250);
  }

  // ---- live updates ----
  function beep() {
    try {
      var ctx = new (window.AudioContext || window.webkitAudioContext)();
      var o = ctx.createOscillator(); var g = ctx.createGain();
      o.frequency.value = 880; g.gain.value = 0.05; o.connect(g); g.connect(ctx.destination);
      o.start(); o.stop(ctx.currentTime + 0.15);
    } catch (e) { /* no sound here */ }
  }
  function follow() {
    if (source) { source.close(); }
    source = new EventSource("/v1/stream");
    source.onmessage = function () {};
    var kinds = ["conversation.assigned", "conversation.claimed", "conversation.transferred", "conversation.queued",
      "conversation.left_unassigned", "conversation.unassigned", "conversation.closed", "conversation.reopened",
      "conversation.opened", "message.received", "message.sent", "agent.status_changed"];
    kinds.forEach(function (k) {
      source.addEventListener(k, function (ev) {
        var e = JSON.parse(ev.data);
        var mine = me.agent && e.agent === me.agent.id;
        if (mine && (k === "conversation.assigned" || k === "conversation.transferred")) {
          if (view !== "mine") { unseen += 1; }
          beep();
          if (window.Notification && Notification.permission === "granted") {
            try { new Notification("Usher: a conversation for you", { body: e.data && e.data.explanation || "" }); } catch (x) { /* ignore */ }
          }
          toast("New conversation assigned to you");
        }
        if (mine && k === "agent.status_changed") { me.agent.status = e.data.to; }
        refreshSoon();
      });
    });
  }

  // ---- agent views ----
  function conversationRow(c, action) {
    var preview = c.message ? " · " + c.message.slice(0, 80) : "";
    return el("li", { "data-conversation": String(c.id) }, [
      el("div", { class: "row-main" }, [
        el("strong", { text: who(c) }),
        el("span", { class: "muted", text: " · " + c.channel + preview }),
        el("div", { class: "muted", text: "opened " + ago(c.opened_at) + (c.queue ? " · position " + c.queue.position : "") })
      ]),
      action
    ]);
  }
  function showMine(main) {
    var list = el("ul", { id: "mine", class: "list" });
    main.appendChild(el("section", { class: "card" }, [el("h2", { text: "Mine" }), list]));
    api("GET", "/v1/conversations?status=assigned&limit=200").then(function (j) {
      var mine = j.conversations.filter(function (c) { return c.assignee === me.agent.id; });
      mine.sort(function (a, b) { return Date.parse(b.assigned_at || b.opened_at) - Date.parse(a.assigned_at || a.opened_at); });
      if (!mine.length) { list.appendChild(el("li", { class: "muted", text: "Nothing assigned to you right now." })); }
      mine.forEach(function (c) {
        list.appendChild(conversationRow(c, el("button", { type: "button", class: "primary", "data-open": String(c.id), text: "Open",
          onclick: function () { view = "conversation"; open = c.id; render(); } })));
      });
    }).catch(function (e) { list.appendChild(el("li", { class: "error", text: e.message })); });
  }
  function showUnassigned(main) {
    var list = el("ul", { id: "unassigned", class: "list" });
    var result = el("p", { id: "claim-result", role: "alert", class: "error", text: notice });
    main.appendChild(el("section", { class: "card" }, [el("h2", { text: "Unassigned" }), result, list]));
    api("GET", "/v1/conversations?status=unassigned&limit=200").then(function (j) {
      if (!j.conversations.length) { list.appendChild(el("li", { class: "muted", text: "Nothing waiting to be picked." })); }
      j.conversations.forEach(function (c) {
        var join = el("button", { type: "button", class: "primary", "data-join": String(c.id), text: "Join", onclick: function () {
          join.disabled = true;
          api("POST", "/v1/conversations/" + c.id + "/claim", {})
            .then(function () { view = "conversation"; open = c.id; notice = ""; render(); })
            .catch(function (e) {
              notice = e.code === "already_assigned" ? "Someone else already took this conversation." : e.message;
              render();
            });
        } });
        list.appendChild(conversationRow(c, join));
      });
    }).catch(function (e) { list.appendChild(el("li", { class: "error", text: e.message })); });
  }
  function showConversation(main, id) {
    var card = el("section", { class: "card", id: "conversation", "data-conversation": String(id) });
    main.appendChild(card);
    Promise.all([
      api("GET", "/v1/conversations/" + id),
      api("GET", "/v1/conversations/" + id + "/messages?limit=500"),
      api("GET", "/v1/conversations/" + id + "/trace").catch(function () { return { decisions: [] }; }),
      api("GET", "/v1/teams").catch(function () { return { teams: [] }; })
    ]).then(function (r) {
      var c = r[0], messages = r[1].messages, decisions = r[2].decisions, teams = r[3].teams;
      var last = decisions.length ? decisions[decisions.length - 1] : null;
      var list = el("ul", { id: "messages", class: "messages" }, messages.map(function (m) {
        return el("li", { class: m.direction, "data-author": m.author, text: m.text });
      }));
      var text = el("textarea", { id: "reply-text", rows: "2", "aria-label": "Your answer", placeholder: "Write an answer…" });
      var reply = el("form", { class: "reply", onsubmit: function (ev) {
        ev.preventDefault();
        if (!text.value.trim()) { return; }
        api("POST", "/v1/conversations/" + id + "/messages", { text: text.value })
          .then(function () { text.value = ""; render(); }).catch(function (e) { toast(e.message); });
      } }, [text, el("button", { id: "reply-send", class: "primary", type: "submit", text: "Send" })]);
      var team = el("select", { id: "transfer-team", "aria-label": "Transfer to team" }, teams.map(function (t) {
        return el("option", { value: String(t.id), text: t.name });
      }));
      var actions = el("div", { class: "actions" }, [
        el("button", { id: "close-conversation", type: "button", text: "Close", onclick: function () {
          api("POST", "/v1/conversations/" + id + "/close", {}).then(function () { view = "mine"; open = null; toast("Closed"); render(); })
            .catch(function (e) { toast(e.message); });
        } }),
        teams.length ? team : null,
        teams.length ? el("button", { id: "transfer", type: "button", text: "Transfer", onclick: function () {
          api("POST", "/v1/conversations/" + id + "/transfer", { team: Number(team.value) })
            .then(function () { view = "mine"; open = null; toast("Transferred"); render(); }).catch(function (e) { toast(e.message); });
        } }) : null,
        el("button", { type: "button", text: "Back", onclick: function () { view = "mine"; open = null; render(); } })
      ]);
      card.replaceChildren(
        el("h2", { text: who(c) }),
        el("p", { class: "muted", text: c.channel + " · " + c.status + " · opened " + ago(c.opened_at) +
          (c.first_response_seconds !== null && c.first_response_seconds !== undefined ? " · first response after " + duration(c.first_response_seconds) : "") }),
        last ? el("p", { id: "trace", class: "trace", text: last.explanation }) : null,
        list, c.status === "assigned" ? reply : null, actions);
    }).catch(function (e) { card.appendChild(el("p", { class: "error", text: e.message })); });
  }

  // ---- the manager's live board ----
  function showBoard(main) {
    var holder = el("div", { id: "board" });
    main.appendChild(holder);
    Promise.all([api("GET", "/v1/teams"), api("GET", "/v1/agents"), api("GET", "/v1/events?limit=1000&after=0").catch(function () { return { events: [] }; })])
      .then(function (r) {
        var teams = r[0].teams, agents = r[1].agents, hour = Date.now() - 3600 * 1000, lastHour = {};
        r[2].events.forEach(function (e) {
          if ((e.kind === "conversation.assigned" || e.kind === "conversation.claimed") && e.agent && Date.parse(e.at) >= hour) {
            lastHour[e.agent] = (lastHour[e.agent] || 0) + 1;
          }
        });
        var byId = {}; agents.forEach(function (a) { byId[a.id] = a; });
        return Promise.all(teams.map(function (t) { return api("GET", "/v1/teams/" + t.id + "/queue"); })).then(function (queues) {
          holder.replaceChildren.apply(holder, teams.map(function (t, i) { return teamCard(t, queues[i], byId, lastHour); }));
        });
      }).catch(function (e) { holder.appendChild(el("p", { class: "error", text: e.message })); });
  }
  function teamCard(t, q, byId, lastHour) {
    var members = t.members.map(function (id) { return byId[id]; }).filter(Boolean);
    var online = members.filter(function (a) { return a.status === "online"; }).length;
    var rows = members.map(function (a) {
      var status = el("select", { "aria-label": "Presence of " + a.name, "data-agent-status": String(a.id), onchange: function () {
        api("PUT", "/v1/agents/" + a.id + "/status", { status: status.value }).then(function () { toast(a.name + " is " + status.value); })
          .catch(function (e) { toast(e.message); });
      } }, ["online", "busy", "away", "offline"].map(function (p) { return el("option", { value: p, selected: a.status === p ? "selected" : null, text: p }); }));
      var cap = el("input", { type: "number", min: "0", max: "1000", value: String(a.max_open), "aria-label": "Cap of " + a.name, "data-agent-cap": String(a.id), onchange: function () {
        api("PATCH", "/v1/agents/" + a.id, { max_open: Number(cap.value) }).then(function () { toast("Cap of " + a.name + ": " + cap.value); })
          .catch(function (e) { toast(e.message); });
      } });
      var share = a.max_open ? Math.min(100, Math.round(100 * a.open / a.max_open)) : 100;
      return el("tr", { "data-agent": String(a.id) }, [
        el("td", {}, [el("strong", { text: a.name }), el("div", { class: "status-" + a.status, text: a.status })]),
        el("td", {}, [status]),
        el("td", {}, [el("span", { class: "load" + (a.open >= a.max_open ? " full" : "") }, [el("span", { style: null })]), a.open + " / ", cap]),
        el("td", { class: "wide", text: a.received_today + (a.daily_limit ? " / " + a.daily_limit : "") }),
        el("td", { class: "wide", "data-last-hour": String(a.id), text: String(lastHour[a.id] || 0) })
      ].map(function (td, i) { if (i === 2) { td.firstChild.firstChild.style.width = share + "%"; } return td; }));
    });
    var longest = q.waiting.reduce(function (m, w) { return Math.max(m, w.waited_seconds); }, 0);
    var queue = q.waiting.length ? el("ol", { class: "list", "data-queue": String(t.id) }, q.waiting.map(function (w) {
      return el("li", {}, ["#" + w.position + " · conversation " + w.conversation + " · " + w.priority,
        el("span", { class: "muted", text: "waited " + duration(w.waited_seconds) + " · estimate " + duration(w.estimated_wait_seconds) })]);
    })) : el("p", { class: "muted", text: "Nobody is waiting." });
    return el("section", { class: "card", "data-team": String(t.id) }, [
      el("h2", { text: t.name }),
      el("p", { class: "muted", text: t.strategy.replace("_", " ") + " · " + online + " of " + members.length + " online · " +
        q.waiting.length + " waiting" + (q.waiting.length ? " · longest wait " + duration(longest) : "") }),
      el("div", { class: "scroll" }, [el("table", {}, [
        el("thead", {}, [el("tr", {}, [el("th", { text: "Agent" }), el("th", { text: "Presence" }), el("th", { text: "Open / cap" }),
          el("th", { class: "wide", text: "Today" }), el("th", { class: "wide", text: "Last hour" })])]),
        el("tbody", {}, rows)
      ])]),
      el("h3", { text: "Queue" }), queue
    ]);
  }

  // ---- reports ----
  var reportChoice = { hours: "24", team: "" };
  function showReports(main) {
    var card = el("section", { class: "card", id: "reports" });
    main.appendChild(card);
    api("GET", "/v1/teams").then(function (j) {
      var period = el("select", { id: "report-period", "aria-label": "Period", onchange: function () { reportChoice.hours = period.value; render(); } },
        [["24", "Last 24 hours"], ["168", "Last 7 days"], ["720", "Last 30 days"]].map(function (o) {
          return el("option", { value: o[0], selected: reportChoice.hours === o[0] ? "selected" : null, text: o[1] });
        }));
      var team = el("select", { id: "report-team", "aria-label": "Team", onchange: function () { reportChoice.team = team.value; render(); } },
        [el("option", { value: "", text: "All teams" })].concat(j.teams.map(function (t) {
          return el("option", { value: String(t.id), selected: reportChoice.team === String(t.id) ? "selected" : null, text: t.name });
        })));
      var hours = Number(reportChoice.hours);
      var to = new Date(Math.ceil(Date.now() / 60000) * 60000);
      var from = new Date(to.getTime() - hours * 3600 * 1000);
      var q = "?from=" + encodeURIComponent(from.toISOString()) + "&to=" + encodeURIComponent(to.toISOString()) +
        "&bucket_minutes=" + (hours <= 24 ? 60 : hours <= 168 ? 360 : 1440) + (reportChoice.team ? "&team=" + reportChoice.team : "");
      return api("GET", "/v1/reports" + q).then(function (r) {
        function table(id, head, rows) {
          return el("div", { class: "scroll" }, [el("table", { id: id }, [
            el("thead", {}, [el("tr", {}, head.map(function (h) { return el("th", { text: h }); }))]),
            el("tbody", {}, rows.map(function (row) { return el("tr", {}, row.map(function (c) { return el("td", { text: String(c) }); })); }))
          ])]);
        }
        function csv(name) { return el("a", { href: "/v1/reports/" + name + ".csv" + q, download: "usher-" + name + ".csv", text: "CSV" }); }
        function chart(name, label) { return el("img", { src: "/v1/reports/" + name + ".svg" + q, alt: label, "data-chart": name, class: "chart" }); }
        var c = r.counts;
        card.replaceChildren(
          el("h2", { text: "Reports" }),
          el("div", { class: "actions" }, [period, team]),
          el("h3", {}, ["Conversations ", csv("counts")]),
          table("report-counts", ["Opened", "Assigned", "Waited", "Closed", "Longest wait"], [[c.opened, c.assigned, c.waited, c.closed, duration(r.longest_wait_seconds)]]),
          el("h3", {}, ["Times ", csv("times")]),
          table("report-times", ["Measure", "Conversations", "Median", "90th percentile"], r.times.map(function (t) {
            return [t.measure.replace(/_/g, " "), t.count, duration(t.median_seconds), duration(t.p90_seconds)];
          })),
          chart("times", "Times: median and 90th percentile"),
          el("h3", {}, ["Per agent ", csv("agents")]),
          table("report-agents", ["Agent", "Assigned", "Share"], r.agents.map(function (a) {
            return [a.name, a.assigned, Math.round(a.share * 100) + " %"];
          })),
          chart("agents", "Assignments per agent"),
          chart("load", "Assignments per agent over time"),
          el("h3", {}, ["Queue over time ", csv("buckets")]),
          chart("queue", "Conversations waiting over time")
        );
      });
    }).catch(function (e) { card.appendChild(el("p", { class: "error", text: e.message })); });
  }

  function boot() {
    return api("GET", "/v1/session").then(function (s) {
      me = s;
      view = isAgent() ? "mine" : "board";
      if (window.Notification && Notification.permission === "default" && isAgent()) {
        try { Notification.requestPermission(); } catch (e) { /* ignore */ }
      }
      follow();
      render();
    }).catch(function (e) { if (e.status === 401) { renderLogin(); } else { app.textContent = e.message; } });
  }
  boot();
})();
