// The console's one way to the server: GraphQL over /graphql/, with the Django session.

const ENDPOINT = "/graphql/";

function cookie(name) {
  const prefix = name + "=";
  const found = document.cookie.split("; ").find((part) => part.startsWith(prefix));
  return found ? decodeURIComponent(found.slice(prefix.length)) : "";
}

export class GraphQLError extends Error {}

// A query or mutation. The CSRF token is read on every call: signing in rotates it.
export async function gql(query, variables = {}) {
  const response = await fetch(ENDPOINT, {
    method: "POST",
    credentials: "same-origin",
    headers: {
      "Content-Type": "application/json",
      "X-CSRFToken": cookie(document.body.dataset.csrfCookie),
    },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new GraphQLError(body.errors.map((e) => e.message).join("; "));
  return body.data;
}

// A subscription over SSE (graphql-sse, GET): onNext gets each result's data. An
// EventSource reconnects by itself (sending Last-Event-ID, which jobProgress resumes at);
// onReconnect is told, so a caller can refresh what a stream without ids may have missed.
// Returns a function that closes the stream.
export function subscribe(query, variables, { onNext, onComplete, onReconnect }) {
  const url = `${ENDPOINT}?query=${encodeURIComponent(query)}&variables=${encodeURIComponent(JSON.stringify(variables))}`;
  const source = new EventSource(url, { withCredentials: true });
  let opened = false;
  source.addEventListener("open", () => {
    if (opened && onReconnect) onReconnect();
    opened = true;
  });
  source.addEventListener("next", (message) => {
    const payload = JSON.parse(message.data);
    if (payload.data) onNext(payload.data);
  });
  source.addEventListener("complete", () => {
    source.close();
    if (onComplete) onComplete();
  });
  return () => source.close();
}
