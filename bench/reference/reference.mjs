// Reference benchmark: replays a Canopy workload (bench/workload.h, JSON lines) through
// Automerge and Yjs and measures how fast a receiving replica applies the encoded changes.
//
//   node reference.mjs WORKLOAD_FILE [--limit N|all] [--automerge-limit N|all]
//                      [--yjs-limit N|all] [--only automerge|yjs] [--repeat N]
//
// --limit replays only the first N changes for both libraries. Automerge is timed on the first
// 4,000 changes unless --automerge-limit says otherwise (see DEFAULT_AUTOMERGE_LIMIT); Yjs on all.
//
// For each library:
//   1. A sender replica applies every change, one CRDT document per key, and encodes each change
//      as the library's binary update (untimed):
//        Automerge: Automerge.change() then Automerge.getLastLocalChange();
//        Yjs:       one doc.transact() per change, the bytes of its 'update' event.
//   2. Timed: a receiving replica applies all encoded changes in stream order
//        Automerge: Automerge.applyChanges(doc, [change]) on that key's document
//                   (Automerge.init() the first time a key is seen);
//        Yjs:       Y.applyUpdate(doc, update) (new Y.Doc() the first time a key is seen).
//      Before the timed passes, the first 500 changes are applied to throwaway documents (JIT
//      warm-up). Each timed pass starts from no documents in a fresh worker thread; --repeat N
//      passes (default 3) are run and the fastest is reported, which on a shared machine is the
//      least disturbed one.
//   3. Untimed check: every receiving document equals the sender's and the plain-JSON model.
//
// Mapping of the JSON documents (chosen to match Canopy's per-field last-writer-wins registers):
//   - objects       -> nested maps (Automerge map objects, nested Y.Map);
//   - strings       -> atomic registers: Automerge.ImmutableString, Yjs map values (ContentAny);
//   - numbers, booleans -> plain scalar values;
//   - arrays        -> one atomic value each: Automerge stores the array's JSON text as an
//                      ImmutableString; Yjs stores the plain JS array as a map value (ContentAny,
//                      which Yjs never merges element-wise);
//   - create        -> set every top-level field of the new document;
//   - patch         -> JSON merge patch (RFC 7386): null deletes the key, an object merges into
//                      the nested map (replacing a non-map value), anything else overwrites;
//   - remove        -> delete every top-level key of the document (no tombstone flag).
//
// A change that leaves a document as it was produces no update; it is still counted (the
// receiver has nothing to apply for it). The count of such no-ops goes to stderr.
//
// stdout: one JSON line per library,
//   {"bench":"store.reference","metric":"automerge_changes_per_s","value":N}
//   {"bench":"store.reference","metric":"yjs_changes_per_s","value":N}
// Everything else goes to stderr. The sender and the receiver of each library run in worker
// threads of their own (see main below).

import { readFileSync } from "node:fs";
import * as Automerge from "@automerge/automerge";
import * as Y from "yjs";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";

// Automerge is timed on this many changes by default (--automerge-limit all for the whole
// stream): past a few thousand live documents in one process its throughput collapses, as V8
// runs a full garbage collection every few changes (external-memory pressure from Automerge's
// WebAssembly heap), and the whole 21,000-change stream would take over ten minutes.
const DEFAULT_AUTOMERGE_LIMIT = 4000;

function usage() {
  console.error(
    "usage: node reference.mjs WORKLOAD_FILE [--limit N|all] [--automerge-limit N|all] " +
      "[--yjs-limit N|all] [--only automerge|yjs] [--repeat N]",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    file: null,
    limit: Infinity,
    automergeLimit: DEFAULT_AUTOMERGE_LIMIT,
    yjsLimit: Infinity,
    only: null,
    repeat: 3,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = () => {
      const arg = argv[++i];
      if (arg === "all") return Infinity;
      const v = Number(arg);
      if (!Number.isInteger(v) || v <= 0) usage();
      return v;
    };
    if (a === "--limit") opts.limit = num();
    else if (a === "--automerge-limit") opts.automergeLimit = num();
    else if (a === "--yjs-limit") opts.yjsLimit = num();
    else if (a === "--repeat") opts.repeat = Math.min(num(), 100);
    else if (a === "--only" && ["automerge", "yjs"].includes(argv[i + 1])) opts.only = argv[++i];
    else if (a === "-h" || a === "--help") usage();
    else if (opts.file === null) opts.file = a;
    else usage();
  }
  if (opts.file === null) usage();
  return opts;
}

function loadWorkload(path) {
  const out = [];
  const text = readFileSync(path, "utf8");
  let lineno = 0;
  for (const line of text.split("\n")) {
    lineno++;
    if (line.trim() === "") continue;
    const c = JSON.parse(line);
    if (c.op === "create" && isObject(c.doc)) out.push({ op: "create", key: c.key, body: c.doc });
    else if (c.op === "patch" && isObject(c.patch))
      out.push({ op: "patch", key: c.key, body: c.patch });
    else if (c.op === "remove") out.push({ op: "remove", key: c.key, body: null });
    else throw new Error(`${path}:${lineno}: bad change`);
  }
  return out;
}

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

// User + system microseconds of a process.cpuUsage() difference (all threads of the process).
function cpuMicros(u) {
  return u.user + u.system;
}

function rate(n, ns) {
  return n / (Number(ns) / 1e9);
}

function fmt(x) {
  return Math.round(x).toLocaleString("en-US");
}

// ----- the plain-JSON model (what every replica must end with) --------------------------------

function mergePatch(target, patch) {
  if (!isObject(patch)) return structuredClone(patch);
  const out = isObject(target) ? target : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function applyModel(model, c) {
  if (c.op === "create") model.set(c.key, structuredClone(c.body));
  else if (c.op === "patch") model.set(c.key, mergePatch(model.get(c.key) ?? {}, c.body));
  else model.set(c.key, {});
}

// Sorted-key JSON text, arrays as their compact JSON text (as Automerge stores them).
function canonical(v) {
  if (Array.isArray(v)) return JSON.stringify(JSON.stringify(v));
  if (isObject(v)) {
    const keys = Object.keys(v).sort();
    return "{" + keys.map((k) => JSON.stringify(k) + ":" + canonical(v[k])).join(",") + "}";
  }
  return JSON.stringify(v);
}

// Changes applied to throwaway receiving documents before the timed passes (JIT warm-up).
const WARMUP = 500;

// Runs pass(n), which applies the first n changes to fresh receiving documents, once on WARMUP
// changes (then releases those documents with `free`), then on all n. Returns the timed pass.
function warmThenTime(pass, n, free) {
  for (const doc of pass(Math.min(WARMUP, n)).receivers.values()) free(doc);
  return pass(n);
}

// ----- Automerge -------------------------------------------------------------------------------

function amValue(v) {
  if (typeof v === "string") return new Automerge.ImmutableString(v);
  if (Array.isArray(v)) return new Automerge.ImmutableString(JSON.stringify(v));
  if (isObject(v)) {
    const o = {};
    for (const [k, x] of Object.entries(v)) if (x !== null) o[k] = amValue(x);
    return o;
  }
  return v;
}

function amIsMap(v) {
  return v !== null && typeof v === "object" && !Automerge.isImmutableString(v);
}

function amMerge(target, patch) {
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) {
      if (k in target) delete target[k];
    } else if (isObject(v)) {
      if (amIsMap(target[k])) amMerge(target[k], v);
      else target[k] = amValue(v);
    } else {
      target[k] = amValue(v);
    }
  }
}

// Automerge document -> plain JSON (arrays stay as their JSON text).
function amPlain(v) {
  if (Automerge.isImmutableString(v)) return v.toString();
  if (isObject(v)) {
    const o = {};
    for (const [k, x] of Object.entries(v)) o[k] = amPlain(x);
    return o;
  }
  return v;
}

function amCanonical(doc) {
  // Arrays are held as their JSON text, which canonical() also uses for arrays.
  return canonical(amPlain(doc));
}

// Sender: applies every change; returns the encoded changes (null for a no-op) and the state.
function encodeAutomerge(changes) {
  const actor = "c0ffee".padEnd(32, "0");
  const senders = new Map();
  const encoded = new Array(changes.length);
  let bytes = 0;
  let noops = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < changes.length; i++) {
    const c = changes[i];
    let doc = senders.get(c.key) ?? Automerge.init({ actor });
    const before = Automerge.getHeads(doc);
    doc = Automerge.change(doc, (d) => {
      if (c.op === "create") {
        for (const [k, v] of Object.entries(c.body)) d[k] = amValue(v);
      } else if (c.op === "patch") {
        amMerge(d, c.body);
      } else {
        for (const k of Object.keys(d)) delete d[k];
      }
    });
    const after = Automerge.getHeads(doc);
    if (after.length === before.length && after.every((h, j) => h === before[j])) {
      encoded[i] = null;
      noops++;
    } else {
      encoded[i] = Automerge.getLastLocalChange(doc);
      bytes += encoded[i].length;
    }
    senders.set(c.key, doc);
  }
  const ns = process.hrtime.bigint() - t0;
  const state = new Map();
  for (const [key, doc] of senders) state.set(key, amCanonical(doc));
  return { encoded, state, ns, bytes, noops };
}

// Receiver (timed): applies the encoded changes in order.
function applyAutomerge(keys, encoded) {
  const pass = (n) => {
    const receivers = new Map();
    const t0 = process.hrtime.bigint();
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < n; i++) {
      const bin = encoded[i];
      if (bin === null) continue;
      const key = keys[i];
      let doc = receivers.get(key) ?? Automerge.init();
      [doc] = Automerge.applyChanges(doc, [bin]);
      receivers.set(key, doc);
    }
    const ns = process.hrtime.bigint() - t0;
    return { receivers, ns, cpuUs: cpuMicros(process.cpuUsage(cpu0)) };
  };
  const { receivers, ns, cpuUs } = warmThenTime(pass, encoded.length, (d) => Automerge.free(d));
  const state = new Map();
  for (const [key, doc] of receivers) state.set(key, amCanonical(doc));
  return { ns, cpuUs, state };
}

// ----- Yjs ---------------------------------------------------------------------------------------

function yFill(map, obj) {
  for (const [k, v] of Object.entries(obj)) {
    if (v === null) continue;
    if (isObject(v)) {
      const m = new Y.Map();
      map.set(k, m);
      yFill(m, v);
    } else {
      map.set(k, v);
    }
  }
}

function yMerge(map, patch) {
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) {
      if (map.has(k)) map.delete(k);
    } else if (isObject(v)) {
      const cur = map.get(k);
      if (cur instanceof Y.Map) {
        yMerge(cur, v);
      } else {
        const m = new Y.Map();
        map.set(k, m);
        yFill(m, v);
      }
    } else {
      map.set(k, v);
    }
  }
}

function yCanonical(doc) {
  return canonical(doc.getMap("root").toJSON());
}

function encodeYjs(changes) {
  const senders = new Map();
  const encoded = new Array(changes.length);
  let bytes = 0;
  let noops = 0;
  let last = null;
  const onUpdate = (u) => {
    last = u;
  };
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < changes.length; i++) {
    const c = changes[i];
    let doc = senders.get(c.key);
    if (doc === undefined) {
      doc = new Y.Doc();
      doc.on("update", onUpdate);
      senders.set(c.key, doc);
    }
    const root = doc.getMap("root");
    last = null;
    doc.transact(() => {
      if (c.op === "create") yFill(root, c.body);
      else if (c.op === "patch") yMerge(root, c.body);
      else for (const k of Array.from(root.keys())) root.delete(k);
    });
    encoded[i] = last;
    if (last === null) noops++;
    else bytes += last.length;
  }
  const ns = process.hrtime.bigint() - t0;
  const state = new Map();
  for (const [key, doc] of senders) state.set(key, yCanonical(doc));
  return { encoded, state, ns, bytes, noops };
}

function applyYjs(keys, encoded) {
  const pass = (n) => {
    const receivers = new Map();
    const t0 = process.hrtime.bigint();
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < n; i++) {
      const u = encoded[i];
      if (u === null) continue;
      const key = keys[i];
      let doc = receivers.get(key);
      if (doc === undefined) {
        doc = new Y.Doc();
        doc.getMap("root");
        receivers.set(key, doc);
      }
      Y.applyUpdate(doc, u);
    }
    const ns = process.hrtime.bigint() - t0;
    return { receivers, ns, cpuUs: cpuMicros(process.cpuUsage(cpu0)) };
  };
  const { receivers, ns, cpuUs } = warmThenTime(pass, encoded.length, (d) => d.destroy());
  const state = new Map();
  for (const [key, doc] of receivers) state.set(key, yCanonical(doc));
  return { ns, cpuUs, state };
}

// ----- main --------------------------------------------------------------------------------------
//
// The sender and the receiver of each library run in worker threads of their own (each a separate
// V8 isolate with its own copy of the library and its WebAssembly memory), so the timed receiver
// carries only its own documents, as a real receiving replica would, and one library's garbage
// does not slow the other.

const LIBS = {
  automerge: { encode: encodeAutomerge, apply: applyAutomerge },
  yjs: { encode: encodeYjs, apply: applyYjs },
};

// How many changes of the (possibly --limit'ed) stream a library replays.
function prefixOf(opts, lib, available) {
  const own = lib === "automerge" ? opts.automergeLimit : opts.yjsLimit;
  return Math.min(available, own);
}

function workerMain() {
  const { role, lib, file, count, keys, encoded } = workerData;
  if (role === "encode") {
    const changes = loadWorkload(file).slice(0, count);
    const r = LIBS[lib].encode(changes);
    parentPort.postMessage({
      encoded: r.encoded,
      state: r.state,
      ns: r.ns,
      bytes: r.bytes,
      noops: r.noops,
    });
  } else {
    const r = LIBS[lib].apply(keys, encoded);
    parentPort.postMessage({ ns: r.ns, cpuUs: r.cpuUs, state: r.state });
  }
}

function inWorker(data) {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL(import.meta.url), { workerData: data });
    let result = null;
    w.once("message", (m) => {
      result = m;
    });
    w.once("error", reject);
    w.once("exit", (code) => {
      if (result !== null) resolve(result);
      else reject(new Error(`${data.lib} ${data.role} worker exited with code ${code}`));
    });
  });
}

async function bench(name, metric, file, all, count, repeat) {
  const changes = all.slice(0, count);
  const prefix = count < all.length ? ` (a prefix of ${count} of ${all.length} changes)` : "";
  console.error(`${name}: replaying ${count} changes${prefix}...`);
  const sent = await inWorker({ role: "encode", lib: name, file, count });
  const keys = changes.map((c) => c.key);
  // Each timed pass runs in a fresh worker, so no pass inherits another's heaps; the fastest is
  // reported.
  let recv = null;
  for (let r = 0; r < repeat; r++) {
    const pass = await inWorker({ role: "apply", lib: name, keys, encoded: sent.encoded });
    const wall = (Number(pass.ns) / 1e9).toFixed(2);
    const cpu = (pass.cpuUs / 1e6).toFixed(2);
    console.error(
      `${name}: pass ${r + 1}: ${fmt(rate(count, pass.ns))} changes/s ` +
        `(${wall} s; process CPU ${cpu} s)`,
    );
    if (recv === null || pass.ns < recv.ns) recv = pass;
  }

  const model = new Map();
  for (const c of changes) applyModel(model, c);
  let bad = 0;
  for (const [key, want] of model) {
    const w = canonical(want);
    const s = sent.state.get(key);
    const r = recv.state.get(key) ?? "{}";
    if (s !== w || r !== w) {
      if (bad++ < 3) console.error(`${name}: state of ${key} differs from the JSON model`);
    }
  }
  const perS = rate(count, recv.ns);
  console.error(
    `${name}: sender ${fmt(rate(count, sent.ns))} changes/s, ${fmt(sent.bytes)} update bytes, ` +
      `${sent.noops} no-op changes; receiver applied ${count} changes in ` +
      `${(Number(recv.ns) / 1e9).toFixed(3)} s = ${fmt(perS)} changes/s${prefix} ` +
      `(fastest of ${repeat} passes); ` +
      `${model.size} documents, ${bad} mismatches`,
  );
  if (bad !== 0) process.exitCode = 1;
  console.log(JSON.stringify({ bench: "store.reference", metric, value: Math.round(perS) }));
}

function version(pkg) {
  const url = new URL(`./node_modules/${pkg}/package.json`, import.meta.url);
  try {
    return JSON.parse(readFileSync(url, "utf8")).version;
  } catch {
    return "?";
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const all = loadWorkload(opts.file);
  const counts = { create: 0, patch: 0, remove: 0 };
  for (const c of all) counts[c.op]++;
  console.error(
    `workload ${opts.file}: ${all.length} changes (${counts.create} create, ` +
      `${counts.patch} patch, ${counts.remove} remove); node ${process.version}, ` +
      `@automerge/automerge ${version("@automerge/automerge")}, yjs ${version("yjs")}`,
  );
  const base = all.slice(0, Math.min(all.length, opts.limit));
  if (opts.only !== "yjs") {
    const count = prefixOf(opts, "automerge", base.length);
    await bench("automerge", "automerge_changes_per_s", opts.file, base, count, opts.repeat);
  }
  if (opts.only !== "automerge") {
    const count = prefixOf(opts, "yjs", base.length);
    await bench("yjs", "yjs_changes_per_s", opts.file, base, count, opts.repeat);
  }
}

if (isMainThread) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  workerMain();
}
