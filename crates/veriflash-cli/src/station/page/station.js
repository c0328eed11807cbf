// veriflash station: renders what the station sends over Server-Sent Events. Every value a
// device or the package supplies is set as text (textContent), never as HTML.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const devices = new Map();

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function size(bytes) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let v = bytes, u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u += 1; }
  return (u === 0 ? v : v.toFixed(1)) + " " + units[u];
}

function post(path, body) {
  return fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Veriflash-Token": token },
    body: JSON.stringify(body),
  }).then(r => r.json().then(j => {
    document.getElementById("message").textContent = j.ok ? "" : (j.message || "refused");
  })).catch(e => { document.getElementById("message").textContent = String(e); });
}

function renderPackage(p) {
  const dl = document.getElementById("package");
  dl.replaceChildren();
  const facts = [
    ["Product", p.product], ["Chipset", p.chipset], ["Version", p.version],
    ["Security version", p.security_version], ["Package id", p.package_id],
    ["Signers", p.signers.join(", ")],
    ["Images", p.images.map(i => i.name + " → " + i.partition + " (" + size(i.size) + ")").join(", ")],
    ["Partition table", p.partition_table_rewrites
      ? "may be rewritten (started with --allow-partition-table)"
      : "never rewritten (a package that would is refused)"],
  ];
  for (const [k, v] of facts) { dl.append(el("dt", k), el("dd", v)); }
  const ol = document.getElementById("steps");
  ol.replaceChildren();
  const names = { signature: "Signature", integrity: "Integrity of every chunk", verified: "Verified" };
  for (const s of p.steps) {
    const li = el("li");
    li.dataset.step = s.step;
    li.append(el("span", (s.ok ? "✓ " : "✗ ") + (names[s.step] || s.step), s.ok ? "ok" : "bad"));
    li.append(document.createTextNode(" — " + s.detail));
    ol.append(li);
  }
}

function identityCell(d) {
  const td = el("td");
  if (d.identity) {
    const i = d.identity;
    td.append(el("span", (i.chip || "?") + " · " + (i.product || "?")));
    td.append(el("small", "serial " + (i.serial || "unknown")));
    td.append(el("small", "version " + (i.version || "none installed") + " · floor " + i.floor));
  } else if (d.identity_error) {
    td.append(el("span", "not identified (code " + d.identity_error.code + ")", "bad"));
    td.append(el("small", d.identity_error.message));
  } else {
    td.append(el("span", "identifying…"));
  }
  return td;
}

function statusCell(d) {
  const td = el("td");
  // A finished install says how it ended (installed, refused, failed); otherwise the state.
  td.append(el("span", d.result ? d.result.result : d.state, "state"));
  if (d.phase) td.append(el("small", "phase: " + d.phase.replace("_", " ")));
  const p = d.progress;
  if (d.state === "flashing" && p) {
    const bar = el("progress");
    bar.max = p.total || 1;
    bar.value = p.done;
    bar.setAttribute("aria-label", "Progress of " + d.target);
    td.append(bar);
    const pct = p.total ? Math.floor(p.done * 100 / p.total) : 0;
    const eta = p.eta_secs === null || p.eta_secs === undefined ? "–" : p.eta_secs + " s";
    td.append(el("small", pct + " % · " + size(p.rate_bytes_per_sec) + "/s · ETA " + eta));
  }
  return td;
}

function resultCell(d) {
  const td = el("td", null, "result");
  const r = d.result;
  if (!r) return td;
  if (r.ok) {
    td.dataset.code = "0";
    td.append(el("span", "✓ installed", "ok"));
  } else {
    const e = r.error;
    td.dataset.code = String(e.code);
    td.append(el("span", (r.result === "refused" ? "✗ refused" : "✗ failed") + " · code " + e.code + " " + e.kind, "bad"));
    td.append(el("small", e.message));
    if (e.remedy) td.append(el("small", "Remedy: " + e.remedy, "remedy"));
  }
  return td;
}

function actionsCell(d) {
  const td = el("td");
  const flash = el("button", "Flash");
  flash.setAttribute("aria-label", "Flash " + d.target);
  flash.disabled = d.state === "flashing" || d.state === "identifying" || !d.present;
  flash.addEventListener("click", () => post("/api/flash", { targets: [d.target] }));
  const cancel = el("button", "Cancel", "secondary");
  cancel.setAttribute("aria-label", "Cancel the install on " + d.target);
  cancel.disabled = d.state !== "flashing";
  cancel.addEventListener("click", () => post("/api/cancel", { target: d.target }));
  td.append(flash, " ", cancel);
  return td;
}

function renderDevices() {
  const body = document.querySelector("#devices tbody");
  body.replaceChildren();
  for (const d of [...devices.values()].sort((a, b) => a.target.localeCompare(b.target))) {
    const tr = el("tr");
    tr.dataset.target = d.target;
    tr.dataset.state = d.state;
    const who = el("td");
    who.append(el("span", d.target), el("small", "found by " + d.found_by));
    tr.append(who, identityCell(d), statusCell(d), resultCell(d), actionsCell(d));
    body.append(tr);
  }
  document.getElementById("no-devices").hidden = devices.size > 0;
}

function addHistory(r) {
  const tr = el("tr");
  tr.dataset.serial = r.device_serial;
  tr.dataset.code = String(r.code);
  for (const v of [r.device_serial, r.target, r.version + " (" + r.package_id.slice(0, 12) + "…)",
                   r.result, r.code, r.started, r.finished]) {
    tr.append(el("td", v));
  }
  document.querySelector("#history tbody").append(tr);
}

function apply(m) {
  if (m.type === "snapshot") {
    renderPackage(m.package);
    document.getElementById("mode").textContent = m.auto
      ? "Automatic: every device that appears is flashed."
      : "Nothing is installed without a click.";
    devices.clear();
    for (const d of m.devices) devices.set(d.target, d);
    document.querySelector("#history tbody").replaceChildren();
    for (const r of m.history) addHistory(r);
  } else if (m.type === "device") {
    devices.set(m.device.target, m.device);
  } else if (m.type === "removed") {
    devices.delete(m.target);
  } else if (m.type === "history") {
    addHistory(m.record);
  }
  renderDevices();
}

document.addEventListener("DOMContentLoaded", () => {
  const q = "?token=" + encodeURIComponent(token);
  document.getElementById("export-csv").href = "/api/history.csv" + q;
  document.getElementById("export-json").href = "/api/history.json" + q;
  document.getElementById("flash-all").addEventListener("click", () => post("/api/flash", { all: true }));
  document.getElementById("cancel-all").addEventListener("click", () => post("/api/cancel", {}));
  const status = document.getElementById("connection");
  const source = new EventSource("/api/events" + q);
  source.onopen = () => { status.textContent = "Live"; };
  source.onerror = () => { status.textContent = "Connection lost: retrying…"; };
  source.onmessage = e => apply(JSON.parse(e.data));
});
