// Charts drawn as inline SVG from jobStats: no library.

const SVG = "http://www.w3.org/2000/svg";
export const STATUS_COLOURS = {
  PENDING: "#9aa5b1", STARTED: "#5b8def", PROGRESS: "#3b6fd8", RETRY: "#e0a100",
  SUCCESS: "#2e9d5b", FAILURE: "#d64545", CANCELLED: "#7b5ea7", TIMEOUT: "#b35c00",
};

function el(name, attributes, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function clear(svg) {
  while (svg.firstChild) svg.firstChild.remove();
}

// Stacked bars: one per minute since `since`, a segment per status.
export function drawPerMinute(svg, since, perMinute, minutes = 60) {
  clear(svg);
  const [width, height, left, bottom] = [600, 180, 30, 20];
  const start = Math.floor(new Date(since).getTime() / 60000);
  const slots = Array.from({ length: minutes + 1 }, () => ({}));
  for (const row of perMinute) {
    const slot = Math.floor(new Date(row.minute).getTime() / 60000) - start;
    if (slot >= 0 && slot <= minutes) slots[slot][row.status] = row.count;
  }
  const totals = slots.map((slot) => Object.values(slot).reduce((a, b) => a + b, 0));
  const top = Math.max(1, ...totals);
  const barWidth = (width - left) / slots.length;
  const scale = (height - bottom - 10) / top;
  svg.append(el("text", { x: 0, y: 12, class: "axis" }, String(top)));
  svg.append(el("text", { x: 0, y: height - bottom, class: "axis" }, "0"));
  slots.forEach((slot, index) => {
    let y = height - bottom;
    for (const [status, count] of Object.entries(slot)) {
      const h = count * scale;
      y -= h;
      const bar = el("rect", {
        x: left + index * barWidth, y, width: Math.max(1, barWidth - 1), height: h,
        fill: STATUS_COLOURS[status], "data-status": status, "data-count": count,
      });
      bar.append(el("title", {}, `${count} ${status}`));
      svg.append(bar);
    }
  });
  svg.append(el("text", { x: left, y: height - 4, class: "axis" }, "-60 min"));
  svg.append(el("text", { x: width - 30, y: height - 4, class: "axis" }, "now"));
}

// Two horizontal bars per kind: p50 (solid) and p95 (light), with their values.
export function drawDurations(svg, durations) {
  clear(svg);
  if (!durations.length) {
    svg.append(el("text", { x: 10, y: 30, class: "axis" }, "No job finished in the last hour."));
    return;
  }
  const [width, left] = [600, 150];
  const rowHeight = Math.min(34, 180 / durations.length);
  svg.setAttribute("viewBox", `0 0 ${width} ${Math.max(180, rowHeight * durations.length)}`);
  const top = Math.max(0.001, ...durations.map((d) => d.p95));
  const scale = (width - left - 80) / top;
  durations.forEach((d, index) => {
    const y = index * rowHeight;
    const group = el("g", { "data-kind": d.kind });
    group.append(el("text", { x: 0, y: y + rowHeight / 2 + 4, class: "axis" }, d.kind));
    group.append(el("rect", { x: left, y: y + 4, width: Math.max(1, d.p95 * scale), height: rowHeight - 8, class: "p95" }));
    group.append(el("rect", { x: left, y: y + 4, width: Math.max(1, d.p50 * scale), height: rowHeight - 8, class: "p50" }));
    group.append(el("text", { x: left + d.p95 * scale + 4, y: y + rowHeight / 2 + 4, class: "axis" },
      `${d.p50.toFixed(2)} / ${d.p95.toFixed(2)} s (${d.count})`));
    svg.append(group);
  });
}
