// The dashboard page: the generations of a window, their details, the charts and the replicas,
// kept current by the server's event stream (or, where that fails, by asking every 2 s).
"use strict";

(() => {
  const $ = (selector) => document.querySelector(selector);
  const seconds = window.Charts.seconds;
  const state = {
    hours: 24,
    status: "",
    user: "",
    cursors: [null], // where each page seen so far starts; the last one is shown
    next: null,
    rows: new Map(), // id -> row shown, with when it was read
    selected: null,
    signature: "",
    chartsAt: 0,
    chartsTimer: null,
    polling: null,
  };
  const CHARTS_EVERY_MS = 5000;
  const CHARTS_AT_LEAST_MS = 30000;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function setLive(text, mood) {
    const badge = $("#live");
    badge.textContent = text;
    badge.dataset.state = mood;
  }

  async function api(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (response.status === 401) {
      window.location.assign("/dashboard"); // signed out (or the token changed): the form again
      throw new Error("signed out");
    }
    if (response.status === 503) {
      setLive("database unavailable", "down");
      throw new Error("database unavailable");
    }
    if (!response.ok) throw new Error(`${path} answered ${response.status}`);
    return response.json();
  }

  function query(extra) {
    const params = new URLSearchParams({ hours: String(state.hours) });
    for (const [key, value] of Object.entries(extra || {})) if (value) params.set(key, value);
    return params.toString();
  }

  const kindName = (kind) => ({ text_to_3d: "text → 3D", image_to_3d: "image → 3D", text_to_image: "text → image" })[kind] || kind;
  const when = (iso) => (iso ? new Date(iso).toLocaleString([], { dateStyle: "short", timeStyle: "medium" }) : "–");
  const running = (row) => (row.status === "processing" || row.status === "pending") && !row.finished_at;

  // The time a row has waited or run so far, counted on from when it was read.
  function since(row, key) {
    const value = row[key];
    if (value === null || value === undefined) return null;
    const moving = key === "running_s" ? row.status === "processing" : !row.claimed_at;
    return moving && running(row) ? value + (Date.now() - row.readAt) / 1000 : value;
  }

  function progressCell(row) {
    if (row.status !== "processing") return el("td", { class: "progress-cell" });
    const bar = el("progress", { max: 100, value: row.progress, "aria-label": `progress of ${row.model_name}` });
    return el("td", { class: "progress-cell" }, el("div", { class: "progress" }, bar, el("span", { class: "pct" }, `${row.progress}%`)));
  }

  function rowElement(row) {
    const tr = el(
      "tr",
      { "data-id": row.id, "data-status": row.status, tabindex: 0, "aria-selected": String(row.id === state.selected) },
      el("td", { class: "model", title: row.model_name }, row.model_name),
      el("td", {}, el("code", { title: "the user's id begins so; click to see only theirs" }, row.user)),
      el("td", {}, kindName(row.kind)),
      el("td", {}, el("span", { class: `badge ${row.status}` }, row.status)),
      progressCell(row),
      el("td", { class: "time waiting" }, seconds(since(row, "waiting_s"))),
      el("td", { class: "time running" }, seconds(since(row, "running_s"))),
      el("td", { class: "reason", title: row.reason || "" }, row.reason || ""),
    );
    tr.addEventListener("click", (event) => {
      if (event.target.closest("code")) return filterByUser(row.user);
      openDetails(row.id);
    });
    tr.addEventListener("keydown", (event) => {
      if (event.key === "Enter") openDetails(row.id);
    });
    return tr;
  }

  async function refreshList() {
    const page = await api(`/api/generations?${query({ status: state.status, user: state.user, before: state.cursors.at(-1) })}`);
    const readAt = Date.now();
    state.rows = new Map(page.generations.map((row) => [row.id, { ...row, readAt }]));
    state.next = page.next;
    $("#generations tbody").replaceChildren(...[...state.rows.values()].map(rowElement));
    $("#empty").hidden = state.rows.size > 0;
    $("#older").disabled = !state.next;
    $("#newer").disabled = state.cursors.length < 2;
    $("#page").textContent = `page ${state.cursors.length}`;
  }

  function tickTimes() {
    for (const tr of document.querySelectorAll("#generations tbody tr")) {
      const row = state.rows.get(tr.dataset.id);
      if (!row || !running(row)) continue;
      tr.querySelector(".waiting").textContent = seconds(since(row, "waiting_s"));
      tr.querySelector(".running").textContent = seconds(since(row, "running_s"));
    }
  }

  function detail(dl, term, value, cls) {
    if (value === null || value === undefined || value === "") return;
    dl.append(el("dt", {}, term), el("dd", { class: cls }, value));
  }

  function fileDetail(dl, name, file) {
    if (!file) return;
    detail(dl, `${name} path`, file.path ? el("code", {}, file.path) : null);
    if (file.url) {
      const open = file.open ? el("a", { href: file.open, target: "_blank", rel: "noopener noreferrer" }, "open") : null;
      detail(dl, `${name} URL`, el("span", {}, el("code", {}, file.url), " ", open));
    }
  }

  function renderDetails(d) {
    const dl = el("dl");
    detail(dl, "Model", d.model_name);
    detail(dl, "Id", el("code", {}, d.id));
    detail(dl, "User", el("code", {}, d.user));
    detail(dl, "Kind", kindName(d.kind));
    detail(dl, "Status", el("span", { class: `badge ${d.status}` }, d.status));
    detail(dl, "Progress", `${d.progress}%`);
    detail(dl, "Reason", d.reason, "reason");
    detail(dl, "AI task id", d.task_id ? el("code", {}, d.task_id) : "not submitted");
    detail(dl, "Attempts", String(d.attempts));
    detail(dl, "Lease holder", d.lease_owner ? el("code", {}, d.lease_owner) : "none");
    if (d.lease_left_s !== null) detail(dl, "Lease ends in", seconds(Math.max(0, d.lease_left_s)));
    detail(dl, "Failed polls", d.poll_failures ? String(d.poll_failures) : null);
    detail(dl, "Owner's retries", d.owner_retries ? String(d.owner_retries) : null);
    detail(dl, "Prompt", d.prompt);
    detail(dl, "Source image", d.source_image ? el("code", {}, d.source_image) : null);
    detail(dl, "Created", when(d.created_at));
    detail(dl, "Requested", when(d.requested_at));
    detail(dl, "Claimed", when(d.claimed_at));
    detail(dl, "Submitted", when(d.submitted_at));
    detail(dl, "Finished", when(d.finished_at));
    detail(dl, "Waited", seconds(d.waiting_s));
    detail(dl, "Ran", seconds(d.running_s));
    fileDetail(dl, "GLB", d.files.glb);
    fileDetail(dl, "STL", d.files.stl);
    fileDetail(dl, "Thumbnail", d.files.thumbnail);
    if (d.file_size) detail(dl, "GLB size", `${(d.file_size / 1024).toFixed(1)} KiB`);
    $("#details dl").replaceWith(dl);
    $("#details-title").textContent = d.model_name;
    $("#details").hidden = false;
  }

  async function openDetails(id) {
    state.selected = id;
    for (const tr of document.querySelectorAll("#generations tbody tr")) tr.setAttribute("aria-selected", String(tr.dataset.id === id));
    renderDetails(await api(`/api/generations/${encodeURIComponent(id)}`));
  }

  function closeDetails() {
    state.selected = null;
    $("#details").hidden = true;
    for (const tr of document.querySelectorAll("#generations tbody tr[aria-selected='true']")) tr.setAttribute("aria-selected", "false");
  }

  function renderTotals(totals) {
    const tiles = [
      ["completed", "completed"],
      ["failed", "failed"],
      ["processing", "running"],
      ["pending", "waiting"],
      ["cancelled", "cancelled"],
    ];
    $("#totals").replaceChildren(
      ...tiles.map(([key, label]) => el("div", { class: `tile ${key}` }, el("b", {}, String(totals[key] || 0)), el("span", {}, label))),
    );
  }

  async function refreshCharts() {
    state.chartsAt = Date.now();
    const charts = await api(`/api/charts?${query()}`);
    renderTotals(charts.totals);
    window.Charts.hourly($("#chart-hourly .plot"), charts);
    window.Charts.durations($("#chart-durations .plot"), charts.durations, $("#chart-durations .note"));
    window.Charts.failures($("#chart-failures .plot"), charts.failures);
    window.Charts.queue($("#chart-queue .plot"), charts);
  }

  async function refreshReplicas() {
    const answer = await api("/api/replicas");
    $("#connected").textContent = `${answer.connected} connected · leases last ${answer.lease_s} s`;
    $("#replicas tbody").replaceChildren(
      ...answer.replicas.map((r) =>
        el(
          "tr",
          {},
          el("td", {}, el("code", {}, r.name), r.this ? el("span", { class: "note" }, " (serving this page)") : null),
          el("td", { class: "num" }, String(r.in_flight)),
          el("td", {}, r.renewed_s_ago === null ? "–" : `${seconds(Math.max(0, r.renewed_s_ago))} ago`),
          el("td", {}, r.next_expiry_s === null ? "–" : seconds(Math.max(0, r.next_expiry_s))),
          el("td", { class: "num" }, String(r.expired)),
        ),
      ),
    );
    $("#no-replicas").hidden = answer.replicas.length > 0;
  }

  // One state of the live stream: progress moves in place; anything else reads the list again.
  function onLive(snapshot) {
    const readAt = Date.now();
    for (const moving of snapshot.in_flight) {
      const row = state.rows.get(moving.id);
      if (!row || row.status !== moving.status) continue;
      Object.assign(row, { progress: moving.progress, running_s: moving.running_s, readAt });
      const tr = document.querySelector(`#generations tbody tr[data-id="${CSS.escape(moving.id)}"]`);
      const bar = tr && tr.querySelector("progress");
      if (bar) {
        bar.value = moving.progress;
        tr.querySelector(".pct").textContent = `${moving.progress}%`;
      }
    }
    const signature = JSON.stringify([snapshot.newest_request, snapshot.newest_end, snapshot.in_flight.map((r) => [r.id, r.status])]);
    if (signature === state.signature) return;
    state.signature = signature;
    quietly(refreshList());
    if (state.selected) quietly(openDetails(state.selected));
    chartsSoon();
  }

  // The charts follow changes too, but are read at most every few seconds: a change within
  // that time is shown when it ends.
  function chartsSoon() {
    if (state.chartsTimer) return;
    const wait = Math.max(0, state.chartsAt + CHARTS_EVERY_MS - Date.now());
    state.chartsTimer = setTimeout(() => {
      state.chartsTimer = null;
      quietly(refreshCharts());
    }, wait);
  }

  function quietly(promise) {
    promise.catch((error) => console.warn(error.message));
  }

  function poll() {
    if (state.polling) return;
    setLive("polling every 2 s", "warn");
    state.polling = setInterval(async () => {
      try {
        onLive(await api("/api/live"));
        setLive("polling every 2 s", "warn");
      } catch (error) {
        console.warn(error.message);
      }
    }, 2000);
  }

  function listen() {
    if (!window.EventSource) return poll();
    const source = new EventSource("/api/events");
    source.addEventListener("live", (event) => {
      setLive("live", "ok");
      onLive(JSON.parse(event.data));
    });
    source.addEventListener("unavailable", () => setLive("database unavailable", "down"));
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) poll();
      else setLive("reconnecting…", "warn");
    });
  }

  function reset() {
    state.cursors = [null];
    closeDetails();
    quietly(refreshList());
  }

  function filterByUser(user) {
    $("#user").value = user;
    state.user = user;
    reset();
  }

  function wire() {
    $("#window").addEventListener("change", (event) => {
      state.hours = Number(event.target.value);
      reset();
      quietly(refreshCharts());
    });
    $("#status").addEventListener("change", (event) => {
      state.status = event.target.value;
      reset();
    });
    let typing = null;
    $("#user").addEventListener("input", (event) => {
      clearTimeout(typing);
      typing = setTimeout(() => {
        const value = event.target.value.replaceAll("-", "").trim().toLowerCase();
        if (value && !/^[0-9a-f]{1,32}$/.test(value)) return;
        state.user = value;
        reset();
      }, 300);
    });
    $("#older").addEventListener("click", () => {
      if (!state.next) return;
      state.cursors.push(state.next);
      quietly(refreshList());
    });
    $("#newer").addEventListener("click", () => {
      if (state.cursors.length < 2) return;
      state.cursors.pop();
      quietly(refreshList());
    });
    $("#close-details").addEventListener("click", closeDetails);
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape") closeDetails();
    });
  }

  wire();
  quietly(refreshList());
  quietly(refreshCharts());
  quietly(refreshReplicas());
  listen();
  setInterval(tickTimes, 1000);
  setInterval(() => quietly(refreshReplicas()), 5000);
  setInterval(() => {
    if (Date.now() - state.chartsAt >= CHARTS_AT_LEAST_MS) quietly(refreshCharts());
  }, 5000);
})();
