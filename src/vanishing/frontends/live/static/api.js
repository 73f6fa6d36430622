// The server: the token, JSON requests and the words of its API that the page relies on.

export const MAX_RUNS = 4; // runs side by side (the server's limit; Chrome allows 6 connections a host)
// statuses of a run still to train; the server's final ones are ok, diverged, failed, stopped,
// unfinished
export const LIVE_STATUSES = new Set(["waiting", "queued", "pending", "starting", "running", "training", "stopping"]);

export function takeToken() {
  // The token arrives in the URL once; keep it for this tab and take it out of the address bar
  // so that a copied link shares the settings, not the token.
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  if (token) {
    sessionStorage.setItem("vanishing-token", token);
    params.delete("token");
    history.replaceState(null, "", queryUrl(params));
  }
  return token || sessionStorage.getItem("vanishing-token") || "";
}

export function queryUrl(params) {
  // this page's address with `params` as its query, commas left readable
  const query = params.toString().replace(/%2C/g, ",");
  return location.pathname + (query ? "?" + query : "");
}

export function connect(token) {
  // api(path) GETs, api(path, body) POSTs JSON; either answers the reply's JSON or throws the
  // server's one-line error.
  return async function api(path, body) {
    const options = { headers: { "X-Token": token }, credentials: "same-origin" };
    if (body !== undefined) {
      options.method = "POST";
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const message = data && data.error ? data.error : `${response.status} ${response.statusText}`;
      throw new Error(message);
    }
    return data;
  };
}
