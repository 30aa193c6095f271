// Webhooks in the console: a job's deliveries (on its page) and the viewer's endpoints
// (under the jobs list). Reads `job { webhookDeliveries }` and `webhookEndpoints`.

import { gql } from "./api.js";

const DELIVERY_FIELDS = `id eventType status attempts lastResponseStatus lastError nextAttemptAt
  deliveredAt webhookId endpoint { url }`;

function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "onclick") node.addEventListener("click", value);
    else if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");

function answer(delivery) {
  if (delivery.lastError) return delivery.lastError;
  return delivery.lastResponseStatus ? `HTTP ${delivery.lastResponseStatus}` : "";
}

function deliveryRow(delivery, onRetried) {
  const retry = delivery.status === "FAILED"
    ? h("button", { type: "button", onclick: () => retryDelivery(delivery.id).then(onRetried) }, "Retry")
    : null;
  return h("tr", { "data-delivery-id": delivery.id, "data-status": delivery.status },
    h("td", {}, delivery.eventType),
    h("td", { class: `status ${delivery.status}` }, delivery.status),
    h("td", {}, String(delivery.attempts)),
    h("td", {}, answer(delivery)),
    h("td", {}, delivery.deliveredAt ? `delivered ${when(delivery.deliveredAt)}` : delivery.nextAttemptAt ? `next ${when(delivery.nextAttemptAt)}` : ""),
    h("td", { class: "url" }, delivery.endpoint ? delivery.endpoint.url : ""),
    h("td", {}, retry));
}

async function retryDelivery(id) {
  const { webhookDeliveryRetry } = await gql(
    `mutation($id: ID!) { webhookDeliveryRetry(id: $id) { delivery { id status } errors { code message } } }`, { id });
  if (webhookDeliveryRetry.errors.length) throw new Error(webhookDeliveryRetry.errors.map((e) => e.message).join("; "));
}

// The job's deliveries into the section's table (its Refresh button reloads them).
export async function showJobDeliveries(jobId) {
  const section = document.querySelector("#job-webhooks");
  const reload = () => showJobDeliveries(jobId);
  section.querySelector("button.refresh").onclick = reload;
  const data = await gql(`query($id: ID!) { job(id: $id) { webhookDeliveries { ${DELIVERY_FIELDS} } } }`, { id: jobId });
  const deliveries = data.job ? data.job.webhookDeliveries : [];
  section.querySelector("tbody").replaceChildren(...deliveries.map((d) => deliveryRow(d, reload)));
  section.querySelector(".empty").hidden = deliveries.length > 0;
}

// The viewer's endpoints, with each one's latest delivery.
export async function showEndpoints() {
  const data = await gql(`{ webhookEndpoints(first: 20) { edges { node { id url events isActive createdAt
    deliveries(first: 1) { edges { node { status createdAt } } } } } } }`);
  const endpoints = data.webhookEndpoints.edges.map((edge) => edge.node);
  const rows = endpoints.map((endpoint) => {
    const [latest] = endpoint.deliveries.edges.map((edge) => edge.node);
    return h("tr", { "data-endpoint-id": endpoint.id },
      h("td", { class: "url" }, endpoint.url),
      h("td", {}, endpoint.events.join(", ")),
      h("td", {}, endpoint.isActive ? "active" : "disabled"),
      h("td", {}, when(endpoint.createdAt)),
      h("td", {}, latest ? `${latest.status} (${when(latest.createdAt)})` : ""));
  });
  const section = document.querySelector("#webhook-endpoints");
  section.querySelector("tbody").replaceChildren(...rows);
  section.querySelector(".empty").hidden = endpoints.length > 0;
}
