// lossbench's page harness: each technique as a site writes it, fired at the visit's times, and the
// page's own record of what it fired (ids, fire times, pagehide time), sent home at pagehide.
// The plan (window.LOSSBENCH_PLAN) is written into the page by lossbench's page server.
(function () {
  "use strict";
  const plan = window.LOSSBENCH_PLAN;
  const clock = () => performance.timeOrigin + performance.now(); // wall-clock ms, high resolution
  const record = { key: plan.key, loaded: clock(), started: null, fired: [], acked: {}, pings: 0, gone: null };

  function body(id, tech, type) {
    // byte for byte what lossbench.techniques.event_body builds
    return '{"id":"' + id + '","tech":"' + tech + '","type":"' + type + '","url":"' + plan.page_url +
      '","ref":"' + plan.referrer + '","ts":' + Date.now() + ',"vw":1280,"vh":720}';
  }

  function b64url(text) {
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function ack(id) {
    if (record.gone === null) record.acked[id] = clock();
  }

  function preconnect(tech) {
    // as a site's head has it: the browser looks the name up and connects, no request yet
    const link = document.createElement("link");
    link.rel = "preconnect";
    link.href = plan.hosts[tech];
    document.head.appendChild(link);
  }

  function ping(tech) {
    // A URL of its own each time: Blink serves an image URL the document has already loaded from its
    // memory cache (Cache-Control: no-store notwithstanding), and the ping would never leave the page.
    record.pings += 1;
    const img = new Image();
    img.src = plan.hosts[tech] + "/ping.gif?t=" + tech + "&n=" + record.pings;
  }

  const techniques = {
    // new Image().src: a GET with the event in the query string
    "pixel": (id, data, host) => {
      const img = new Image();
      img.onload = () => ack(id);
      img.src = host + "/p.gif?d=" + b64url(data);
    },
    // fetch POST of JSON: CORS preflighted (application/json is not a simple content type)
    "ajax": (id, data, host) => {
      fetch(host + "/e", { method: "POST", mode: "cors", headers: { "Content-Type": "application/json" }, body: data })
        .then((r) => { if (r.ok) ack(id); }, () => {});
    },
    // ajax to a URL of its own per event: the preflight cache is keyed by URL, so every event preflights
    "ajax-cachebust": (id, data, host) => {
      fetch(host + "/e?n=" + id, {
        method: "POST", mode: "cors", headers: { "Content-Type": "application/json" }, body: data,
      }).then((r) => { if (r.ok) ack(id); }, () => {});
    },
    // sendBeacon with a string, as sites write it: text/plain, so no preflight. (A JSON Blob is
    // preflighted with credentials, which a collector answering Access-Control-Allow-Origin: * refuses.)
    "beacon": (id, data, host) => {
      navigator.sendBeacon(host + "/e", data);
    },
    "fetch-keepalive": (id, data, host) => {
      fetch(host + "/e", {
        method: "POST", mode: "cors", keepalive: true, headers: { "Content-Type": "application/json" }, body: data,
      }).then((r) => { if (r.ok) ack(id); }, () => {});
    },
  };
  techniques["pixel-prewarm"] = techniques["pixel"];
  techniques["pixel-keepalive"] = techniques["pixel"];
  techniques["pixel-preconnect"] = techniques["pixel"];

  function fire(event) {
    for (const tech of plan.techniques) {
      const id = event.ids[tech];
      const data = body(id, tech, event.type);
      const fired = { id: id, tech: tech, type: event.type, t: clock() };
      record.fired.push(fired);
      console.debug("lossbench fired " + JSON.stringify(fired)); // lossbench reads it if the record is lost
      techniques[tech](id, data, plan.hosts[tech]);
    }
  }

  function leave() {
    // A script may not close a tab it did not open: lossbench closes it from outside at leave.at.
    if (plan.leave.how === "navigate") window.location.href = plan.leave.next;
  }

  function sendRecord() {
    if (record.gone !== null) return;
    record.gone = clock();
    console.debug("lossbench gone " + JSON.stringify({ t: record.gone, acked: record.acked }));
    navigator.sendBeacon("/record/" + plan.key, new Blob([JSON.stringify(record)], { type: "text/plain" }));
  }
  window.addEventListener("pagehide", sendRecord);

  function at(offset, fn) {
    setTimeout(fn, Math.max(0, plan.start + offset - clock()));
  }

  function start() {
    record.started = clock();
    if (plan.techniques.includes("pixel-prewarm")) ping("pixel-prewarm"); // an empty ping at page load
    if (plan.techniques.includes("pixel-preconnect")) preconnect("pixel-preconnect");
    if (plan.techniques.includes("pixel-keepalive")) {
      ping("pixel-keepalive");
      setInterval(() => ping("pixel-keepalive"), plan.ping_interval); // the page's keep-alive timer
    }
    plan.events.forEach((event, i) => {
      at(event.at, () => {
        fire(event);
        if (plan.leave.how === "navigate" && i === plan.events.length - 1) leave(); // the outbound click
      });
    });
  }

  // Once the page is loaded, lossbench starts the visit ``lead`` ms from now and registers the instant
  // the page returns with its proxy (the page's clock is the one that matters).
  window.lossbenchStart = (lead) => {
    plan.start = clock() + lead;
    at(0, start);
    return plan.start;
  };
})();
