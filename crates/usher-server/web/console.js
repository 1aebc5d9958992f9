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
  var editing = null;      // the workflow in the editor
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
        if (!r.ok) {
          var e = new Error((j.error && j.error.message) || ("HTTP " + r.status));
          e.status = r.status; e.code = j.error && j.error.code; e.problems = j.error && j.error.problems;
          throw e;
        }
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
      onclick: function () { view = name; open = null; editing = null; notice = ""; if (name === "mine") { unseen = 0; } render(); } }, label);
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
      tabs.push(tab("nav-workflows", "workflows", ["Workflows"]));
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
    if (view === "workflows") { return showWorkflows(main); }
    if (view === "workflow" && editing) { return showWorkflow(main, editing); }
    return showMine(main);
  }
  function refreshSoon(e) {
    // A conversation's view changes only with its own events.
    if (view === "conversation" && e && e.conversation !== open) { return; }
    // A report covers a period that has passed, and an editor holds unsaved work: neither is
    // re-rendered by live events.
    if (view === "reports" || view === "workflow") { return; }
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
        refreshSoon(e);
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
      // The teammates it could go to: the members of the conversation's team.
      var mates = r[0].team ? api("GET", "/v1/teams/" + r[0].team + "/members").catch(function () { return { members: [] }; }) : Promise.resolve({ members: [] });
      return mates.then(function (m) { r.push(m.members); return r; });
    }).then(function (r) {
      var c = r[0], messages = r[1].messages, decisions = r[2].decisions, teams = r[3].teams;
      var mates = r[4].filter(function (a) { return !me.agent || a.id !== me.agent.id; });
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
      // One list: a teammate (caps apply), or a team (routed there by its strategy).
      var team = el("select", { id: "transfer-to", "aria-label": "Transfer to" }, mates.map(function (a) {
        return el("option", { value: "agent:" + a.id, text: a.name + " (" + a.status + ", " + a.open + "/" + a.max_open + ")" });
      }).concat(teams.map(function (t) {
        return el("option", { value: "team:" + t.id, text: "team " + t.name });
      })));
      var actions = el("div", { class: "actions" }, [
        el("button", { id: "close-conversation", type: "button", text: "Close", onclick: function () {
          api("POST", "/v1/conversations/" + id + "/close", {}).then(function () { view = "mine"; open = null; toast("Closed"); render(); })
            .catch(function (e) { toast(e.message); });
        } }),
        teams.length ? team : null,
        teams.length ? el("button", { id: "transfer", type: "button", text: "Transfer", onclick: function () {
          var to = team.value.split(":");
          api("POST", "/v1/conversations/" + id + "/transfer", to[0] === "agent" ? { agent: Number(to[1]) } : { team: Number(to[1]) })
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
    // Assignments per agent in the last hour: the report over that hour.
    var now = new Date(), hourAgo = new Date(now.getTime() - 3600 * 1000);
    var lastHourReport = "/v1/reports?from=" + encodeURIComponent(hourAgo.toISOString()) + "&to=" + encodeURIComponent(now.toISOString()) + "&bucket_minutes=60";
    Promise.all([api("GET", "/v1/teams"), api("GET", "/v1/agents"), api("GET", lastHourReport).catch(function () { return { agents: [] }; })])
      .then(function (r) {
        var teams = r[0].teams, agents = r[1].agents, lastHour = {};
        allTeams = teams;
        r[2].agents.forEach(function (a) { lastHour[a.agent] = a.assigned; });
        var byId = {}; agents.forEach(function (a) { byId[a.id] = a; });
        return Promise.all(teams.map(function (t) { return api("GET", "/v1/teams/" + t.id + "/queue"); })).then(function (queues) {
          holder.replaceChildren.apply(holder, teams.map(function (t, i) { return teamCard(t, queues[i], byId, lastHour); }));
        });
      }).catch(function (e) { holder.appendChild(el("p", { class: "error", text: e.message })); });
  }
  var allTeams = [];
  // An agent's teams, as checkboxes: ticking one adds the agent to it, unticking removes it.
  function teamsControl(a, card) {
    var set = el("fieldset", { class: "teams", "data-agent-teams": String(a.id) }, [el("legend", { class: "muted", text: "Teams of " + a.name })]);
    allTeams.forEach(function (t) {
      var id = "member-" + card + "-" + a.id + "-" + t.id;
      var box = el("input", { type: "checkbox", id: id, value: String(t.id), checked: a.teams.indexOf(t.id) >= 0 ? "checked" : null, onchange: function () {
        var chosen = [...set.querySelectorAll("input")].filter(function (i) { return i.checked; }).map(function (i) { return Number(i.value); });
        api("PATCH", "/v1/agents/" + a.id, { teams: chosen }).then(function () { toast(a.name + ": teams saved"); render(); })
          .catch(function (e) { toast(e.message); });
      } });
      set.appendChild(el("label", { for: id, class: "check" }, [box, " " + t.name]));
    });
    return set;
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
        el("td", { class: "wide", "data-last-hour": String(a.id), text: String(lastHour[a.id] || 0) }),
        el("td", {}, [teamsControl(a, t.id)])
      ].map(function (td, i) { if (i === 2) { td.firstChild.firstChild.style.width = share + "%"; } return td; }));
    });
    var longest = q.waiting.reduce(function (m, w) { return Math.max(m, w.waited_seconds); }, 0);
    var queue = q.waiting.length ? el("ol", { class: "list", "data-queue": String(t.id) }, q.waiting.map(function (w) {
      return el("li", { "data-waiting": String(w.conversation) }, [
        el("span", { text: "#" + w.position + " · conversation " + w.conversation + " · " + w.priority }),
        el("span", { class: "muted", text: "waited " + duration(w.waited_seconds) + " · estimate " + duration(w.estimated_wait_seconds) })]);
    })) : el("p", { class: "muted", text: "Nobody is waiting." });
    return el("section", { class: "card", "data-team": String(t.id) }, [
      el("h2", { text: t.name }),
      el("p", { class: "muted", text: t.strategy.replace("_", " ") + " · " + online + " of " + members.length + " online · " +
        q.waiting.length + " waiting" + (q.waiting.length ? " · longest wait " + duration(longest) : "") }),
      el("div", { class: "scroll" }, [el("table", {}, [
        el("thead", {}, [el("tr", {}, [el("th", { text: "Agent" }), el("th", { text: "Presence" }), el("th", { text: "Open / cap" }),
          el("th", { class: "wide", text: "Today" }), el("th", { class: "wide", text: "Last hour" }), el("th", { text: "Teams" })])]),
        el("tbody", {}, rows)
      ])]),
      el("h3", { text: "Queue" }), queue
    ]);
  }

  // ---- workflows ----
  var SKELETONS = {
    send_message: { text: "Hello {{contact.name}}!" }, ask: { text: "What can we help you with?", save_to: "answer" },
    branch: { branches: [], otherwise: "" }, assign: {}, wait: { minutes: 5, next: "" }, unassign: {}, close: {},
    update_contact: {}, note: { text: "" }, jump: { to: "" }
  };
  function showWorkflows(main) {
    var card = el("section", { class: "card", id: "workflows" });
    main.appendChild(card);
    Promise.all([api("GET", "/v1/workflows"), api("GET", "/v1/workflow-templates"), api("GET", "/v1/teams"), api("GET", "/v1/agents"), api("GET", "/v1/calendars")])
      .then(function (r) {
        var workflows = r[0].workflows, templates = r[1].templates, teams = r[2].teams, agents = r[3].agents, calendars = r[4].calendars;
        function choose(id, label, items, name) {
          return el("label", { class: "field" }, [label + " ", el("select", { id: id }, [el("option", { value: "", text: "—" })].concat(items.map(function (x) {
            return el("option", { value: String(x.id), text: x[name] });
          })))]);
        }
        var template = el("select", { id: "template", "aria-label": "Template" }, templates.map(function (t) { return el("option", { value: t.key, text: t.title }); }));
        var about = el("p", { class: "muted", id: "template-about" });
        function describe() {
          var t = templates.filter(function (x) { return x.key === template.value; })[0];
          about.textContent = t ? t.description + (t.needs.length ? " Needs: " + t.needs.join(", ").replace(/_/g, " ") + "." : "") : "";
        }
        template.addEventListener("change", describe);
        describe();
        var error = el("p", { class: "error", id: "template-error", role: "alert" });
        var form = el("form", { id: "new-workflow", onsubmit: function (ev) {
          ev.preventDefault();
          var body = { template: template.value };
          [["team", "tpl-team"], ["second_team", "tpl-second-team"], ["agent", "tpl-agent"], ["calendar", "tpl-calendar"]].forEach(function (p) {
            var v = document.getElementById(p[1]).value; if (v) { body[p[0]] = Number(v); }
          });
          api("POST", "/v1/workflows", body).then(function (w) { editing = w.id; view = "workflow"; render(); })
            .catch(function (e) { error.textContent = e.message; });
        } }, [
          el("h3", { text: "New from a template" }),
          el("div", { class: "actions" }, [template, choose("tpl-team", "Team", teams, "name"), choose("tpl-second-team", "Second team", teams, "name"),
            choose("tpl-agent", "Agent", agents, "name"), choose("tpl-calendar", "Calendar", calendars, "name"),
            el("button", { class: "primary", type: "submit", id: "create-workflow", text: "Create draft" })]),
          about, error
        ]);
        var list = el("ul", { class: "list", id: "workflow-list" }, workflows.map(function (w) {
          var state = w.published_version ? "published v" + w.published_version + (w.enabled ? ", on" : ", off") : "draft, never published";
          return el("li", { "data-workflow": String(w.id) }, [
            el("div", { class: "row-main" }, [el("strong", { text: w.name }), el("div", { class: "muted", text: state })]),
            el("button", { type: "button", "data-edit": String(w.id), text: "Edit", onclick: function () { editing = w.id; view = "workflow"; render(); } })
          ]);
        }));
        if (!workflows.length) { list.appendChild(el("li", { class: "muted", text: "No workflows yet." })); }
        card.replaceChildren(el("h2", { text: "Workflows" }), list, form, calendarsCard(calendars));
      }).catch(function (e) { card.appendChild(el("p", { class: "error", text: e.message })); });
  }
  // Business hours: one line per weekday, "09:00-12:00, 13:00-17:30"; holidays "2026-12-25 Christmas".
  var DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
  function calendarsCard(calendars) {
    var box = el("div", { id: "calendars" });
    function form(c) {
      var spec = c ? c.spec : { name: "", time_zone: "UTC", weekly: {}, holidays: [] };
      var prefix = c ? "cal-" + c.id : "cal-new";
      var name = el("input", { id: prefix + "-name", value: c ? c.name : "", "aria-label": "Calendar name" });
      var zone = el("input", { id: prefix + "-zone", value: spec.time_zone || "UTC", "aria-label": "Time zone (IANA, e.g. Europe/Paris)" });
      var days = DAYS.map(function (d) {
        var spans = ((spec.weekly || {})[d] || []).map(function (s) { return s[0] + "-" + s[1]; }).join(", ");
        return el("div", { class: "field" }, [el("label", { for: prefix + "-" + d, text: d }), el("input", { id: prefix + "-" + d, value: spans, placeholder: "closed" })]);
      });
      var holidays = el("textarea", { id: prefix + "-holidays", rows: "2", "aria-label": "Holidays, one a line: 2026-12-25 Christmas" });
      holidays.value = (spec.holidays || []).map(function (h) { return h.date + (h.name ? " " + h.name : ""); }).join("\n");
      var error = el("p", { class: "error", role: "alert" });
      return el("form", { class: "card", "data-calendar": c ? String(c.id) : "new", onsubmit: function (ev) {
        ev.preventDefault();
        var weekly = {};
        DAYS.forEach(function (d) {
          var text = document.getElementById(prefix + "-" + d).value.trim();
          if (text) { weekly[d] = text.split(",").map(function (p) { return p.trim().split("-").map(function (x) { return x.trim(); }); }); }
        });
        var body = { name: name.value, time_zone: zone.value, weekly: weekly, exceptions: spec.exceptions || [],
          holidays: holidays.value.split("\n").map(function (l) { return l.trim(); }).filter(Boolean).map(function (l) {
            var i = l.indexOf(" "); return i < 0 ? { date: l } : { date: l.slice(0, i), name: l.slice(i + 1) };
          }) };
        (c ? api("PUT", "/v1/calendars/" + c.id, body) : api("POST", "/v1/calendars", body))
          .then(function () { toast("Calendar saved"); render(); })
          .catch(function (e) { error.textContent = e.message + (e.problems ? ": " + e.problems.map(function (p) { return p.path + " " + p.message; }).join("; ") : ""); });
      } }, [
        el("h3", { text: c ? c.name + (c.open_now ? " · open now" : " · closed now" + (c.next_opening ? ", opens " + c.next_opening : "")) : "New calendar" }),
        el("div", { class: "field" }, [el("label", { for: prefix + "-name", text: "Name" }), name]),
        el("div", { class: "field" }, [el("label", { for: prefix + "-zone", text: "Time zone" }), zone]),
        el("div", { class: "days" }, days),
        el("div", { class: "field" }, [el("label", { for: prefix + "-holidays", text: "Holidays (one a line)" }), holidays]),
        error,
        el("button", { type: "submit", class: "primary", id: prefix + "-save", text: c ? "Save" : "Create calendar" })
      ]);
    }
    box.appendChild(el("h2", { text: "Business hours" }));
    calendars.forEach(function (c) { box.appendChild(form(c)); });
    box.appendChild(form(null));
    return box;
  }
  function stepFields(name, step) {
    var fields = Object.keys(step).filter(function (k) { return k !== "kind"; }).map(function (k) {
      var v = step[k], id = "step-" + name + "-" + k, input;
      if (typeof v === "string") { input = el(k === "text" ? "textarea" : "input", { id: id, "data-key": k, "data-type": "string", rows: "2" }); input.value = v; }
      else if (typeof v === "number") { input = el("input", { id: id, type: "number", "data-key": k, "data-type": "number", value: String(v) }); }
      else if (typeof v === "boolean") { input = el("input", { id: id, type: "checkbox", "data-key": k, "data-type": "boolean", checked: v ? "checked" : null }); }
      else { input = el("textarea", { id: id, "data-key": k, "data-type": "json", rows: "3", class: "json" }); input.value = JSON.stringify(v, null, 1); }
      return el("div", { class: "field" }, [el("label", { for: id, text: k.replace(/_/g, " ") }), input]);
    });
    var add = el("div", { class: "actions" }, [
      el("input", { "aria-label": "New field of " + name, placeholder: "field (e.g. next)", class: "new-field" }),
      el("button", { type: "button", text: "Add field", onclick: function (ev) {
        var key = ev.target.previousSibling.value.trim();
        if (!key) { return; }
        var id = "step-" + name + "-" + key;
        var input = el("input", { id: id, "data-key": key, "data-type": "guess" });
        ev.target.parentNode.parentNode.insertBefore(el("div", { class: "field" }, [el("label", { for: id, text: key }), input]), ev.target.parentNode);
        input.focus();
      } })
    ]);
    return el("fieldset", { class: "step", "data-step": name, "data-kind": step.kind }, [
      el("legend", {}, [el("strong", { text: name }), " · " + step.kind.replace(/_/g, " ")]),
      el("div", {}, fields), add,
      el("button", { type: "button", text: "Remove step", onclick: function (ev) { ev.target.closest("fieldset").remove(); } })
    ]);
  }
  function readDocument(form) {
    var doc = { name: form.querySelector("#wf-name").value, trigger: JSON.parse(form.querySelector("#wf-trigger").value),
      start: form.querySelector("#wf-start").value, steps: {} };
    var channels = JSON.parse(form.querySelector("#wf-channels").value || "[]");
    if (channels.length) { doc.channels = channels; }
    form.querySelectorAll("fieldset.step").forEach(function (fs) {
      var step = { kind: fs.dataset.kind };
      fs.querySelectorAll("[data-key]").forEach(function (i) {
        var t = i.dataset.type, v;
        if (t === "string") { v = i.value; } else if (t === "number") { v = Number(i.value); }
        else if (t === "boolean") { v = i.checked; } else if (t === "json") { v = JSON.parse(i.value); }
        else { try { v = JSON.parse(i.value); } catch (e) { v = i.value; } }
        if (!(t === "guess" && i.value === "")) { step[i.dataset.key] = v; }
      });
      doc.steps[fs.dataset.step] = step;
    });
    return doc;
  }
  function showProblems(box, problems, title) {
    box.replaceChildren();
    document.querySelectorAll(".problem").forEach(function (e) { e.classList.remove("problem"); });
    if (!problems.length) { box.appendChild(el("p", { class: "ok", id: "workflow-ok", text: title })); return; }
    box.appendChild(el("ul", { id: "workflow-problems" }, problems.map(function (p) {
      var m = /^steps\.([^.\[]+)/.exec(p.path);
      if (m) { var fs = document.querySelector('fieldset[data-step="' + m[1] + '"]'); if (fs) { fs.classList.add("problem"); } }
      return el("li", { "data-path": p.path }, [el("code", { text: p.path }), " " + p.message]);
    })));
  }
  function showWorkflow(main, id) {
    var card = el("section", { class: "card", id: "workflow", "data-workflow": String(id) });
    main.appendChild(card);
    Promise.all([api("GET", "/v1/workflows/" + id), api("GET", "/v1/workflows/" + id + "/versions")]).then(function (r) {
      var w = r[0], versions = r[1].versions, doc = w.draft;
      var problems = el("div", { id: "workflow-check", role: "status" });
      var diagram = el("img", { id: "workflow-diagram", class: "chart", alt: "The workflow's steps and how they lead on", src: "/v1/workflows/" + id + "/diagram.svg?t=" + Date.now() });
      var name = el("input", { id: "wf-name", value: doc.name, "aria-label": "Name" });
      var start = el("select", { id: "wf-start", "aria-label": "First step" }, Object.keys(doc.steps).map(function (n) {
        return el("option", { value: n, selected: n === doc.start ? "selected" : null, text: n });
      }));
      var trig = el("textarea", { id: "wf-trigger", rows: "2", class: "json", "aria-label": "Trigger" }); trig.value = JSON.stringify(doc.trigger);
      var chans = el("input", { id: "wf-channels", "aria-label": "Channels (JSON list; empty for all)", value: JSON.stringify(doc.channels || []) });
      // The steps in the order a run meets them (breadth first from the start), the rest after.
      var order = [], seen = {}, todo = [doc.start];
      while (todo.length) {
        var n = todo.shift();
        if (seen[n] || !doc.steps[n]) { continue; }
        seen[n] = true; order.push(n);
        JSON.stringify(doc.steps[n]).replace(/"(?:next|to|otherwise|on_queued|on_invalid|on_timeout|go_to)":"([^"]+)"/g, function (_, t) { todo.push(t); return _; });
      }
      Object.keys(doc.steps).forEach(function (n) { if (!seen[n]) { order.push(n); } });
      var steps = el("div", { id: "wf-steps" }, order.map(function (n) { return stepFields(n, doc.steps[n]); }));
      var newName = el("input", { id: "new-step-name", placeholder: "step name", "aria-label": "New step's name" });
      var newKind = el("select", { id: "new-step-kind", "aria-label": "New step's kind" }, Object.keys(SKELETONS).map(function (k) { return el("option", { value: k, text: k.replace(/_/g, " ") }); }));
      var form = el("form", { id: "workflow-form", onsubmit: function (ev) { ev.preventDefault(); save(); } }, [
        el("div", { class: "field" }, [el("label", { for: "wf-name", text: "Name" }), name]),
        el("div", { class: "field" }, [el("label", { for: "wf-trigger", text: "Trigger" }), trig]),
        el("div", { class: "field" }, [el("label", { for: "wf-channels", text: "Channels (empty: all)" }), chans]),
        el("div", { class: "field" }, [el("label", { for: "wf-start", text: "First step" }), start]),
        steps,
        el("div", { class: "actions" }, [newName, newKind, el("button", { type: "button", id: "add-step", text: "Add step", onclick: function () {
          var n = newName.value.trim();
          if (!n || document.querySelector('fieldset[data-step="' + n + '"]')) { toast("Give the step a new name"); return; }
          var skeleton = JSON.parse(JSON.stringify(SKELETONS[newKind.value])); skeleton.kind = newKind.value;
          steps.appendChild(stepFields(n, skeleton));
          start.appendChild(el("option", { value: n, text: n }));
          newName.value = "";
        } })]),
        el("div", { class: "actions" }, [
          el("button", { type: "submit", class: "primary", id: "save-workflow", text: "Save and check" }),
          el("button", { type: "button", id: "publish-workflow", text: "Publish", onclick: function () {
            save().then(function (ok) {
              if (!ok) { return; }
              api("POST", "/v1/workflows/" + id + "/publish", {}).then(function (p) { toast("Published version " + p.published_version); render(); })
                .catch(function (e) { showProblems(problems, (e.problems || []), e.message); });
            });
          } }),
          w.published_version ? el("button", { type: "button", id: "toggle-workflow", text: w.enabled ? "Turn off" : "Turn on", onclick: function () {
            api("POST", "/v1/workflows/" + id + (w.enabled ? "/disable" : "/enable"), {}).then(function () { render(); }).catch(function (e) { toast(e.message); });
          } }) : null,
          versions.length > 1 ? el("select", { id: "rollback-version", "aria-label": "Version to roll back to" }, versions.map(function (v) {
            return el("option", { value: String(v.version), text: "v" + v.version + " · " + ago(v.published_at) });
          })) : null,
          versions.length > 1 ? el("button", { type: "button", id: "rollback", text: "Roll back", onclick: function () {
            api("POST", "/v1/workflows/" + id + "/rollback", { version: Number(document.getElementById("rollback-version").value) })
              .then(function () { toast("Rolled back"); render(); }).catch(function (e) { toast(e.message); });
          } }) : null,
          el("button", { type: "button", text: "Back to the list", onclick: function () { view = "workflows"; editing = null; render(); } })
        ])
      ]);
      function save() {
        var doc2;
        try { doc2 = readDocument(form); } catch (e) { showProblems(problems, [{ path: "document", message: "a JSON field does not parse: " + e.message }], ""); return Promise.resolve(false); }
        return api("PUT", "/v1/workflows/" + id, doc2).then(function () {
          diagram.src = "/v1/workflows/" + id + "/diagram.svg?t=" + Date.now();
          return api("POST", "/v1/workflows/" + id + "/check", {});
        }).then(function (c) {
          showProblems(problems, c.problems, "Saved. No problems: it can be published.");
          return c.problems.length === 0;
        }).catch(function (e) { showProblems(problems, e.problems || [{ path: "document", message: e.message }], ""); return false; });
      }
      var tryName = el("input", { id: "dry-name", value: "Mia", "aria-label": "Sample contact's name" });
      var tryText = el("input", { id: "dry-message", value: "Hello", "aria-label": "Sample first message" });
      var tryOut = el("ol", { id: "dry-trace", class: "muted" });
      var dry = el("form", { id: "dry-run", onsubmit: function (ev) {
        ev.preventDefault();
        api("POST", "/v1/workflows/" + id + "/dry-run", { contact: { name: tryName.value }, message: tryText.value }).then(function (d) {
          tryOut.replaceChildren.apply(tryOut, d.trace.map(function (t) { return el("li", { text: t.step + ": " + t.did }); })
            .concat(d.decisions.map(function (x) { return el("li", { class: "trace", text: x.explanation }); })));
        }).catch(function (e) { tryOut.replaceChildren(el("li", { class: "error", text: e.message })); });
      } }, [el("h3", { text: "Dry run" }), el("div", { class: "actions" }, [tryName, tryText, el("button", { type: "submit", id: "dry-run-go", text: "Try it" })]), tryOut]);
      card.replaceChildren(
        el("h2", { text: w.name }),
        el("p", { class: "muted", text: w.published_version ? "Published version " + w.published_version + (w.enabled ? " runs" : " is off") + ". You edit the draft." : "A draft: publish it to make it run." }),
        el("div", { class: "editor" }, [el("div", { class: "editor-form" }, [form, problems]), el("div", { class: "editor-diagram" }, [diagram])]),
        dry
      );
    }).catch(function (e) { card.appendChild(el("p", { class: "error", text: e.message })); });
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
          chart("queue", "Conversations waiting over time"),
          el("p", {}, ["Replay this period in the simulator: ",
            el("a", { id: "report-trace", href: "/v1/reports/trace.csv" + q, download: "usher-trace.csv", text: "the conversations as a trace" }),
            ", then ", el("code", { text: "usher simulate --trace usher-trace.csv" }), "."])
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
