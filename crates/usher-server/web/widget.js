/* Usher web-chat widget. Include it on any page:
 *   <script src="https://YOUR-USHER/widget.js" data-channel="CHANNEL_KEY" async></script>
 * Options (data- attributes): data-open="true" opens the chat at once; data-title sets the
 * header. It talks only to the Usher server it was loaded from (/v1/webchat/KEY/...), keeps
 * the visitor's id and token in localStorage, sends each message with an id of its own (so
 * a retry after a network error is stored once), and shows answers live from a server-sent
 * event stream that resumes where it left off after a dropped connection. */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.dataset.channel) { return; }
  var key = script.dataset.channel;
  var base = new URL(script.src, document.baseURI).origin + "/v1/webchat/" + encodeURIComponent(key);
  var storeKey = "usher-visitor:" + key;
  var shown = {};
  var lastId = 0;
  var visitor = null;

  function randomId() {
    var b = new Uint8Array(16);
    window.crypto.getRandomValues(b);
    return Array.prototype.map.call(b, function (x) { return ("0" + x.toString(16)).slice(-2); }).join("");
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text) { e.textContent = text; }
    return e;
  }

  var css = "#usher-chat{position:fixed;right:16px;bottom:16px;z-index:2147483000;font:15px/1.4 system-ui,sans-serif}" +
    "#usher-launcher{background:#1f6feb;color:#fff;border:0;border-radius:24px;padding:12px 18px;font:inherit;cursor:pointer}" +
    "#usher-panel{display:none;flex-direction:column;width:min(360px,calc(100vw - 32px));height:min(480px,calc(100vh - 96px));" +
    "background:#fff;border:1px solid #d0d7de;border-radius:12px;box-shadow:0 8px 24px rgba(0,0,0,.15);overflow:hidden}" +
    "#usher-chat.open #usher-panel{display:flex}#usher-chat.open #usher-launcher{display:none}" +
    "#usher-head{background:#1f6feb;color:#fff;padding:10px 14px;display:flex;justify-content:space-between;align-items:center}" +
    "#usher-close{background:none;border:0;color:#fff;font-size:20px;cursor:pointer}" +
    "#usher-messages{flex:1;overflow-y:auto;list-style:none;margin:0;padding:12px;display:flex;flex-direction:column;gap:6px}" +
    "#usher-messages li{max-width:80%;padding:8px 12px;border-radius:14px;white-space:pre-wrap;word-wrap:break-word}" +
    "#usher-messages li[data-direction=inbound]{align-self:flex-end;background:#1f6feb;color:#fff}" +
    "#usher-messages li[data-direction=outbound]{align-self:flex-start;background:#eef1f4;color:#1f2328}" +
    "#usher-form{display:flex;border-top:1px solid #d0d7de}" +
    "#usher-input{flex:1;border:0;padding:12px;font:inherit;min-width:0}#usher-input:focus{outline:2px solid #1f6feb}" +
    "#usher-send{border:0;background:#1f6feb;color:#fff;padding:0 16px;font:inherit;cursor:pointer}" +
    "#usher-status{font-size:12px;color:#57606a;padding:2px 12px}";
  var style = el("style");
  style.textContent = css;
  document.head.appendChild(style);

  var root = el("div", { id: "usher-chat" });
  var launcher = el("button", { id: "usher-launcher", type: "button", "aria-controls": "usher-panel" }, "Chat with us");
  var panel = el("section", { id: "usher-panel", role: "dialog", "aria-label": "Chat" });
  var head = el("div", { id: "usher-head" });
  head.appendChild(el("strong", {}, script.dataset.title || "Chat"));
  var close = el("button", { id: "usher-close", type: "button", "aria-label": "Close chat" }, "\u00d7");
  head.appendChild(close);
  var list = el("ul", { id: "usher-messages", "aria-live": "polite" });
  var status = el("div", { id: "usher-status", role: "status" });
  var form = el("form", { id: "usher-form" });
  var input = el("input", { id: "usher-input", type: "text", autocomplete: "off", "aria-label": "Your message", placeholder: "Type a message\u2026", maxlength: "4000" });
  var send = el("button", { id: "usher-send", type: "submit" }, "Send");
  form.appendChild(input);
  form.appendChild(send);
  panel.appendChild(head);
  panel.appendChild(list);
  panel.appendChild(status);
  panel.appendChild(form);
  root.appendChild(launcher);
  root.appendChild(panel);
  document.body.appendChild(root);

  function open() { root.classList.add("open"); input.focus(); start(); }
  launcher.addEventListener("click", open);
  close.addEventListener("click", function () { root.classList.remove("open"); launcher.focus(); });

  function show(m) {
    if (shown[m.id]) { return; }
    shown[m.id] = true;
    if (m.id > lastId) { lastId = m.id; }
    var li = el("li", { "data-id": String(m.id), "data-direction": m.direction, "data-author": m.author }, m.text);
    list.appendChild(li);
    list.scrollTop = list.scrollHeight;
  }

  function call(method, path, body) {
    return fetch(base + path, {
      method: method,
      headers: body ? { "content-type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined
    }).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) { throw new Error((j.error && j.error.message) || ("HTTP " + r.status)); }
        return j;
      });
    });
  }

  function ensureVisitor() {
    if (visitor) { return Promise.resolve(visitor); }
    try { visitor = JSON.parse(localStorage.getItem(storeKey) || "null"); } catch (e) { visitor = null; }
    if (visitor && visitor.visitor && visitor.token) { return Promise.resolve(visitor); }
    return call("POST", "/visitors").then(function (v) {
      visitor = { visitor: v.visitor, token: v.token };
      try { localStorage.setItem(storeKey, JSON.stringify(visitor)); } catch (e) { /* private mode */ }
      return visitor;
    });
  }

  var started = false;
  function start() {
    if (started) { return; }
    started = true;
    ensureVisitor().then(function (v) {
      var q = "?visitor=" + encodeURIComponent(v.visitor) + "&token=" + encodeURIComponent(v.token);
      return call("GET", "/messages" + q).then(function (j) {
        j.messages.forEach(show);
        // EventSource reconnects by itself and sends Last-Event-ID: nothing is missed.
        var source = new EventSource(base + "/stream" + q + "&after=" + lastId);
        source.addEventListener("message", function (e) { show(JSON.parse(e.data)); status.textContent = ""; });
        source.onerror = function () { status.textContent = "Reconnecting\u2026"; };
        source.onopen = function () { status.textContent = ""; };
      });
    }).catch(function (e) { started = false; status.textContent = "Chat unavailable: " + e.message; });
  }

  function post(body, tries) {
    return call("POST", "/messages", body).catch(function (e) {
      if (tries > 0) {
        return new Promise(function (ok) { setTimeout(ok, 1000); }).then(function () { return post(body, tries - 1); });
      }
      throw e;
    });
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = input.value.trim();
    if (!text) { return; }
    input.value = "";
    ensureVisitor().then(function (v) {
      return post({ visitor: v.visitor, token: v.token, id: randomId(), text: text }, 3);
    }).then(function (j) { show(j.message); start(); })
      .catch(function (e) { status.textContent = "Not sent: " + e.message; input.value = text; });
  });

  if (script.dataset.open === "true") { open(); }
})();
