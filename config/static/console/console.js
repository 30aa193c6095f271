// The live jobs console: history from `jobs`, live changes from `jobEvents` (SSE), a job's
// timeline from `job.events` then `jobProgress(afterSeq:)`, charts from `jobStats`.

import { GraphQLError, gql, subscribe } from "./api.js";
import { drawDurations, drawPerMinute } from "./charts.js";
import { showEndpoints, showJobDeliveries } from "./webhooks.js";

const PAGE_SIZE = 25;
const TERMINAL = new Set(["SUCCESS", "FAILURE", "CANCELLED", "TIMEOUT"]);
const RETRYABLE = new Set(["FAILURE", "CANCELLED", "TIMEOUT"]);
const NEW_METHOD_KINDS = new Set(["PAYMENT", "ORDER_WORKFLOW"]);

const JOB_FIELDS = `id kind status stage message progress current total error attempts
  createdAt startedAt finishedAt cancelRequestedAt queuePosition waitingReason owner { email }`;
const EVENT_FIELDS = "jobId seq status progress current total stage message error cancelRequestedAt queuePosition waitingReason at";

const $ = (selector) => document.querySelector(selector);
const state = { me: null, jobs: new Map(), cursor: null, filters: {}, closeList: null, closeJob: null };

// --- rendering helpers --------------------------------------------------------------------

function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "onclick") node.addEventListener("click", value);
    else if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

const percent = (job) => (job.progress === null || job.progress === undefined ? null : Math.round(job.progress * 100));
const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");

function duration(job) {
  if (!job.startedAt) return "";
  const end = job.finishedAt ? new Date(job.finishedAt) : new Date();
  const seconds = Math.max(0, (end - new Date(job.startedAt)) / 1000);
  return seconds < 60 ? `${seconds.toFixed(1)} s` : `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

function progressCell(job) {
  const value = percent(job);
  const bar = h("progress", { max: 100 });
  if (value !== null) bar.value = value;
  return h("td", { class: "progress" }, bar, h("span", { class: "pct" }, value === null ? "" : `${value}%`));
}

// A job whose cancel was accepted is stopping: it says so, and Cancel is not offered again.
const stopping = (job) => Boolean(job.cancelRequestedAt) && !TERMINAL.has(job.status);

function actions(job) {
  const buttons = [];
  if (stopping(job)) buttons.push(h("span", { class: "cancelling" }, "Cancelling…"));
  else if (!TERMINAL.has(job.status)) buttons.push(h("button", { type: "button", onclick: () => cancel(job.id) }, "Cancel"));
  if (RETRYABLE.has(job.status)) buttons.push(h("button", { type: "button", onclick: () => retry(job) }, "Retry"));
  return buttons;
}

function note(text) {
  $("#list-note").textContent = text;
}

// --- a job's state from an event ----------------------------------------------------------

function applyEvent(job, event) {
  if (event.seq <= (job.seq ?? -1)) return false;
  Object.assign(job, {
    seq: event.seq, status: event.status, progress: event.progress, current: event.current,
    total: event.total, stage: event.stage, message: event.message, error: event.error,
    cancelRequestedAt: event.cancelRequestedAt || job.cancelRequestedAt || null,
    // Waiting for a slot (PENDING): its place and why; gone once it starts.
    queuePosition: event.queuePosition ?? null, waitingReason: event.waitingReason ?? null,
  });
  if (!job.startedAt && event.status !== "PENDING") job.startedAt = event.at;
  if (TERMINAL.has(event.status)) job.finishedAt = job.finishedAt || event.at;
  return true;
}

// --- the list -----------------------------------------------------------------------------

function row(job) {
  return h("tr", { "data-job-id": job.id, "data-status": job.status, "data-seq": job.seq ?? "",
    "data-cancel-requested": job.cancelRequestedAt ? "true" : null },
    h("td", {}, h("a", { href: `#/jobs/${job.id}` }, job.kind)),
    h("td", { class: `status ${job.status}` }, job.status,
      stopping(job) ? h("small", { class: "cancelling" }, " cancel requested") : null),
    h("td", {}, job.stage || ""),
    progressCell(job),
    h("td", { class: "staff-only" }, job.owner ? job.owner.email : ""),
    h("td", {}, time(job.startedAt)),
    h("td", { class: "duration" }, duration(job)),
    h("td", { class: "actions" }, ...actions(job)));
}

function renderRow(job) {
  const existing = document.querySelector(`#jobs tr[data-job-id="${job.id}"]`);
  const fresh = row(job);
  if (existing) existing.replaceWith(fresh);
  else $("#jobs tbody").prepend(fresh);
}

function matchesFilters(job) {
  const f = state.filters;
  return (!f.kind || job.kind === f.kind) && (!f.status || job.status === f.status)
    && (!f.ownerEmail || (job.owner && job.owner.email.toLowerCase() === f.ownerEmail.toLowerCase()));
}

function filterInput() {
  const f = state.filters;
  const input = {};
  if (f.kind) input.kind = f.kind;
  if (f.status) input.status = f.status;
  if (f.ownerEmail) input.ownerEmail = f.ownerEmail;
  return input;
}

async function loadJobs({ more = false } = {}) {
  const data = await gql(
    `query($first: Int, $after: String, $filters: JobFilter) {
      jobs(first: $first, after: $after, filters: $filters) {
        edges { node { ${JOB_FIELDS} } } pageInfo { hasNextPage endCursor } } }`,
    { first: PAGE_SIZE, after: more ? state.cursor : null, filters: filterInput() });
  if (!more) {
    state.jobs.clear();
    $("#jobs tbody").replaceChildren();
  }
  for (const { node } of data.jobs.edges) {
    const known = state.jobs.get(node.id);
    if (known) continue; // a live event already brought it in, newer than this page
    state.jobs.set(node.id, node);
    $("#jobs tbody").append(row(node));
  }
  state.cursor = data.jobs.pageInfo.endCursor;
  $("#more").hidden = !data.jobs.pageInfo.hasNextPage;
}

async function onListEvent(event) {
  let job = state.jobs.get(event.jobId);
  if (!job) {
    const data = await gql(`query($id: ID!) { job(id: $id) { ${JOB_FIELDS} } }`, { id: event.jobId });
    if (!data.job || !matchesFilters(data.job)) return;
    job = state.jobs.get(event.jobId) || data.job; // the list may have loaded it meanwhile
    state.jobs.set(job.id, job);
  }
  if (applyEvent(job, event) || !document.querySelector(`#jobs tr[data-job-id="${job.id}"]`)) renderRow(job);
  if (TERMINAL.has(event.status)) scheduleCharts();
}

function startListStream() {
  if (state.closeList) return;
  let queue = Promise.resolve(); // events of one job apply in the order they came
  state.closeList = subscribe(`subscription { jobEvents { ${EVENT_FIELDS} } }`, {}, {
    onNext: (data) => {
      queue = queue.then(() => onListEvent(data.jobEvents)).catch(report);
    },
    onReconnect: () => loadJobs().catch(report),
  });
}

let chartTimer = null;
function scheduleCharts() {
  clearTimeout(chartTimer);
  chartTimer = setTimeout(() => loadCharts().catch(report), 1000);
}

async function loadCharts() {
  const data = await gql(`{ jobStats(minutes: 60) { since perMinute { minute status count }
    durations { kind count p50 p95 } } }`);
  drawPerMinute($("#chart-per-minute"), data.jobStats.since, data.jobStats.perMinute);
  drawDurations($("#chart-durations"), data.jobStats.durations);
}

// --- actions ------------------------------------------------------------------------------

function errorsOf(payload) {
  return payload.errors.length ? payload.errors.map((e) => `${e.code}: ${e.message}`).join("; ") : null;
}

async function cancel(id) {
  const { jobCancel } = await gql(`mutation($id: ID!) { jobCancel(id: $id) {
    job { id status cancelRequestedAt } errors { code message } } }`, { id });
  const refused = errorsOf(jobCancel);
  if (refused) return note(refused);
  // Shown at once, whichever comes first: this answer or the stream's event.
  const answered = jobCancel.job;
  const known = state.jobs.get(id);
  if (known && !TERMINAL.has(known.status)) {
    known.cancelRequestedAt = answered.cancelRequestedAt;
    renderRow(known);
  }
  note(TERMINAL.has(answered.status) ? "Cancelled." : "Cancel requested: the job is stopping.");
}

function askPaymentMethod(job) {
  const dialog = $("#retry-dialog");
  $("#retry-what").textContent = `${job.kind} job`;
  dialog.querySelector("input").value = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const method = dialog.querySelector("input").value.trim();
      resolve(dialog.returnValue === "retry" ? { paymentMethod: method || null } : null);
    }, { once: true });
  });
}

async function retry(job) {
  const options = NEW_METHOD_KINDS.has(job.kind) ? await askPaymentMethod(job) : { paymentMethod: null };
  if (!options) return;
  const { jobRetry } = await gql(
    `mutation($id: ID!, $paymentMethod: String) { jobRetry(id: $id, paymentMethod: $paymentMethod) {
      job { ${JOB_FIELDS} } errors { code message } } }`, { id: job.id, ...options });
  const failed = errorsOf(jobRetry);
  if (failed) return note(failed);
  const fresh = jobRetry.job;
  if (!state.jobs.has(fresh.id)) {
    state.jobs.set(fresh.id, fresh);
    renderRow(fresh);
  }
  note("Retried.");
  if (location.hash.startsWith("#/jobs/")) location.hash = `#/jobs/${fresh.id}`;
}

async function bulkCancel() {
  const { jobsCancel } = await gql(`mutation($filters: JobFilter!) { jobsCancel(filters: $filters) { count errors { code message } } }`, { filters: filterInput() });
  const count = jobsCancel.count;
  const refused = errorsOf(jobsCancel);
  note(`Cancelled ${count} job${count === 1 ? "" : "s"}.${refused ? ` Refused: ${refused}` : ""}`);
}

// --- a job's page -------------------------------------------------------------------------

function timelineRow(event) {
  const value = event.progress === null ? "" : `${Math.round(event.progress * 100)}%`;
  return h("tr", { "data-seq": event.seq },
    h("td", {}, String(event.seq)), h("td", {}, new Date(event.at).toISOString()),
    h("td", { class: `status ${event.status}` }, event.status), h("td", {}, event.stage || ""),
    h("td", {}, value), h("td", {}, event.error || event.message || ""));
}

function jobLink(job) {
  return h("a", { href: `#/jobs/${job.id}` }, `${job.kind} ${job.status} (${time(job.createdAt)})`);
}

function renderJobLinks(job) {
  const items = [];
  if (job.retryOf) items.push(h("li", {}, "Retry of ", jobLink(job.retryOf)));
  for (const retried of job.retries) items.push(h("li", {}, "Retried as ", jobLink(retried)));
  if (job.report) {
    items.push(h("li", {}, job.report.fileUrl
      ? h("a", { href: job.report.fileUrl, class: "download" }, `Download the report's CSV (${job.report.rowCount} rows)`)
      : `Report ${job.report.status}`));
  }
  if (job.image) {
    items.push(h("li", { class: "thumbnails" }, ...job.image.thumbnails.map((t) =>
      h("a", { href: t.url }, h("img", { src: t.url, alt: `${t.sizeName} thumbnail`, width: Math.min(t.width, 150) })))));
  }
  if (job.order) items.push(h("li", {}, `Order ${job.order.number}: ${job.order.status}, payment ${job.order.paymentStatus}`));
  if (job.payment) items.push(h("li", {}, `Payment ${job.payment.status} by ${job.payment.method}`));
  $("#job-links").replaceChildren(h("ul", {}, ...items));
}

function renderJobHead(job) {
  $("#job-title").textContent = `${job.kind} · ${job.status}${stopping(job) ? " · cancel requested" : ""}`;
  const facts = [["Stage", job.stage || ""], ["Progress", percent(job) === null ? "" : `${percent(job)}%`],
    ["Attempts", String(job.attempts)], ["Owner", job.owner ? job.owner.email : ""],
    ["Created", time(job.createdAt)], ["Started", time(job.startedAt)], ["Duration", duration(job)],
    ["Trace", job.traceId || "(tracing off)"]];
  if (job.cancelRequestedAt) facts.push(["Cancel requested", time(job.cancelRequestedAt)]);
  if (job.status === "PENDING" && job.queuePosition) {
    facts.push(["Queue position", String(job.queuePosition)], ["Waiting", job.waitingReason || ""]);
  }
  $("#job-facts").replaceChildren(...facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  $("#job-view").dataset.status = job.status;
  $("#job-actions").replaceChildren(...actions(job));
  $("#job-error").hidden = !job.error;
  $("#job-error").textContent = job.error || "";
}

async function showJob(id) {
  const data = await gql(`query($id: ID!) { job(id: $id) { ${JOB_FIELDS}
      events { ${EVENT_FIELDS} } traceId
      retryOf { id kind status createdAt } retries { id kind status createdAt }
      report { status fileUrl rowCount } image { thumbnails { sizeName url width } }
      order { number status paymentStatus } payment { status method } } }`, { id });
  const job = data.job;
  if (!job) {
    $("#job-title").textContent = "No such job.";
    return;
  }
  job.seq = -1;
  $("#timeline tbody").replaceChildren();
  for (const event of job.events) {
    applyEvent(job, event);
    $("#timeline tbody").append(timelineRow(event));
  }
  renderJobHead(job);
  renderJobLinks(job);
  showJobDeliveries(job.id).catch(report);
  if (TERMINAL.has(job.status)) return;
  state.closeJob = subscribe(`subscription($id: ID!, $afterSeq: Int) { jobProgress(id: $id, afterSeq: $afterSeq) { ${EVENT_FIELDS} } }`,
    { id, afterSeq: job.seq }, {
      onNext: ({ jobProgress: event }) => {
        if (!applyEvent(job, event)) return;
        $("#timeline tbody").append(timelineRow(event));
        renderJobHead(job);
      },
      onComplete: () => route(), // the ended job's results, retries and links
    });
}

// --- signing in and out, and the page's routes --------------------------------------------

function report(error) {
  note(error instanceof GraphQLError ? error.message : String(error));
  console.error(error);
}

function showSignedIn(me) {
  state.me = me;
  $("#sign-in").hidden = Boolean(me);
  $("#viewer").hidden = !me;
  $("#viewer-email").textContent = me ? me.email : "";
  document.body.classList.toggle("staff", Boolean(me && me.isStaff));
}

async function route() {
  if (state.closeJob) state.closeJob();
  state.closeJob = null;
  if (!state.me) {
    $("#list-view").hidden = $("#job-view").hidden = true;
    return;
  }
  const match = location.hash.match(/^#\/jobs\/(.+)$/);
  $("#list-view").hidden = Boolean(match);
  $("#job-view").hidden = !match;
  if (match) await showJob(decodeURIComponent(match[1]));
}

async function start() {
  const { me } = await gql("{ me { email isStaff } }");
  showSignedIn(me);
  if (!me) return route();
  startListStream();
  await Promise.all([loadJobs(), loadCharts(), route(), showEndpoints()]);
}

$("#sign-in").addEventListener("submit", async (submit) => {
  submit.preventDefault();
  const form = new FormData(submit.target);
  const { sessionCreate } = await gql(
    `mutation($email: String!, $password: String!) { sessionCreate(email: $email, password: $password) {
      user { email } errors { code message } } }`,
    { email: form.get("email"), password: form.get("password") });
  $("#sign-in-error").textContent = errorsOf(sessionCreate) || "";
  if (!sessionCreate.errors.length) await start();
});

$("#sign-out").addEventListener("click", async () => {
  await gql("mutation { sessionEnd { ended errors { code message } } }");
  for (const close of [state.closeList, state.closeJob]) if (close) close();
  state.closeList = state.closeJob = null;
  showSignedIn(null);
  await route();
});

$("#filters").addEventListener("submit", (submit) => {
  submit.preventDefault();
  const form = new FormData(submit.target);
  state.filters = Object.fromEntries([...form.entries()].filter(([, v]) => v.trim()));
  loadJobs().catch(report);
});
$("#bulk-cancel").addEventListener("click", () => bulkCancel().catch(report));
$("#more").addEventListener("click", () => loadJobs({ more: true }).catch(report));
window.addEventListener("hashchange", () => route().catch(report));
setInterval(() => {
  for (const cell of document.querySelectorAll("#jobs tr:not([data-status=SUCCESS]):not([data-status=FAILURE]):not([data-status=CANCELLED]):not([data-status=TIMEOUT]) td.duration")) {
    const job = state.jobs.get(cell.parentElement.dataset.jobId);
    if (job) cell.textContent = duration(job);
  }
}, 1000);
setInterval(() => loadCharts().catch(report), 30000);

start().catch(report);
