// The panel's shell: sign-in, the top bar, and a small router that shows the page the URL names
// (/admin/logs, /admin/usage, /admin/models, /admin/backends, /admin/keys, /admin/settings,
// /admin/status). Each page module exports `mount(container, context)`
// and returns a function that stops whatever it started (sockets, timers).

import { api, ApiError, events, setCsrfToken } from "./api.js";
import { fill, h } from "./dom.js";

const PAGES = {
  logs: { title: "Logs", load: () => import("./logs.js") },
  usage: { title: "Usage", load: () => import("./usage.js") },
  models: { title: "Models", load: () => import("./models.js") },
  backends: { title: "Backends", load: () => import("./backends.js") },
  keys: { title: "Keys", load: () => import("./keys.js") },
  settings: { title: "Settings", load: () => import("./settings.js") },
  status: { title: "Status", load: () => import("./status.js") },
};

const main = document.getElementById("main");
const topbar = document.querySelector(".topbar");
const whoName = document.getElementById("who-name");
const signOutButton = document.getElementById("sign-out");

const state = { session: null, config: null, unmount: null, renderId: 0 };

// The top bar is one row or two, as the screen's width allows; what sits below it (the logs drawer)
// reads its height from --topbar-height.
new ResizeObserver(() => {
  document.documentElement.style.setProperty("--topbar-height", `${topbar.offsetHeight}px`);
}).observe(topbar);

function pageOf(pathname) {
  const name = pathname.replace(/^\/admin\/?/, "").split("/")[0];
  return name in PAGES ? name : "logs";
}

/** Show another page of the panel (a URL under /admin) without reloading. */
export function navigate(url, { replace = false } = {}) {
  history[replace ? "replaceState" : "pushState"](null, "", url);
  render();
}

async function loadConfig() {
  const { data } = await api("/config");
  state.config = data;
  return data;
}

function stopPage() {
  if (state.unmount) {
    state.unmount();
    state.unmount = null;
  }
}

async function render() {
  const id = ++state.renderId;
  stopPage();
  if (!state.session) {
    showSignIn();
    return;
  }
  const name = pageOf(location.pathname);
  const page = PAGES[name];
  if (!location.pathname.startsWith(`/admin/${name}`)) {
    history.replaceState(null, "", `/admin/${name}${location.search}`); // /admin, /admin/signin → logs
  }
  topbar.hidden = false;
  for (const link of topbar.querySelectorAll("nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${page.title} · gateway admin`;
  const module = await page.load();
  if (id !== state.renderId) return; // another navigation happened meanwhile
  fill(main);
  const context = { session: state.session, config: state.config, navigate, loadConfig };
  state.unmount = module.mount(main, context) || null;
}

function showSignIn(message = "", kind = "bad") {
  stopPage();
  topbar.hidden = true;
  document.title = "Sign in · gateway admin";
  const alert = h("p", { class: `alert ${kind}`, role: "alert", id: "sign-in-message" }, message);
  alert.hidden = !message;
  const input = h("input", {
    type: "password", id: "admin-key", name: "key", autocomplete: "off", spellcheck: "false",
    required: true, placeholder: "Admin key",
  });
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      button.disabled = true;
      alert.hidden = true;
      try {
        const { data } = await api("/session", { method: "POST", body: { key: input.value }, quiet401: true });
        await signedIn(data);
      } catch (error) {
        alert.className = "alert bad";
        alert.textContent = signInError(error);
        alert.hidden = false;
        input.select();
      } finally {
        button.disabled = false;
      }
    },
  },
  h("label", { for: "admin-key" }, "Admin key", input), alert, button);
  fill(main, h("section", { class: "signin", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "gateway ", h("span", {}, "admin")),
    h("p", {}, "Sign in with one of the admin keys in auth.admin_keys. Without admin keys, use the local "
      + "admin token: open the sign-in link the gateway printed at start, or paste the token from "
      + ".gateway-admin-token next to its config file."),
    form));
  input.focus();
}

function signInError(error) {
  if (!(error instanceof ApiError)) return String(error);
  if (error.status === 401) return "That key is not valid.";
  if (error.status === 429) {
    const wait = error.headers && error.headers.get("retry-after");
    return `Too many failed sign-ins. Try again in ${wait || "a few"} s.`;
  }
  return error.message;
}

async function signedIn(session) {
  state.session = session;
  setCsrfToken(session.csrf_token);
  // Without admin keys configured, the only admin there can be is the local admin token.
  whoName.textContent = session.admin_keys_configured ? session.name : "local (admin token)";
  whoName.title = whoName.textContent; // a narrow screen shows the name cut short
  signOutButton.hidden = session.via !== "session";
  await loadConfig();
  await render();
}

function signedOut(message, kind = "bad") {
  state.session = null;
  setCsrfToken(null);
  showSignIn(message, kind);
}

signOutButton.addEventListener("click", async () => {
  try {
    await api("/session", { method: "DELETE" });
  } catch (error) {
    // The session may already be over; either way this browser is signed out.
  }
  signedOut("You are signed out.", "info");
});

events.addEventListener("signed-out", () => {
  if (state.session) signedOut("Your session has ended. Sign in again.");
});

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-nav]");
  if (!link || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  navigate(link.getAttribute("href"));
});

window.addEventListener("popstate", () => render());

/** The local admin token of a sign-in URL (/admin/#token=…), taken out of the address bar at once:
 * a fragment never reaches the server, its logs or a Referer, and it must not stay in the history. */
function takeTokenFromUrl() {
  const match = /^#token=([^&]+)/.exec(location.hash);
  if (!match) return null;
  history.replaceState(null, "", `${location.pathname}${location.search}`);
  return decodeURIComponent(match[1]);
}

async function start() {
  const token = takeTokenFromUrl();
  if (token) {
    try {
      const { data } = await api("/session", { method: "POST", body: { key: token }, quiet401: true });
      await signedIn(data);
    } catch (error) {
      showSignIn(`The sign-in link did not work: ${signInError(error)}`);
    }
    return;
  }
  try {
    const { data } = await api("/session", { quiet401: true });
    await signedIn(data);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) showSignIn();
    else showSignIn(error.message || String(error));
  }
}

start();
