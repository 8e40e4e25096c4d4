// Formats inbound messages with OpenClaw's own envelope code (the installed `openclaw` package's
// src/auto-reply/envelope.ts formatInboundEnvelope, found in dist/envelope-*.mjs) and prints
// JSON [[prompt, typed], ...]: what the agent's transcript stores, and what the person typed.
// usage: node make_envelopes.mjs <openclaw>/dist      (used by tests/test_prepare_openclaw.py)
import fs from "node:fs";

const dist = process.argv[2];
const file = fs.readdirSync(dist).find((f) => /^envelope-.*\.mjs$/.test(f)
  && fs.readFileSync(`${dist}/${f}`, "utf8").includes("function formatInboundEnvelope"));
const mod = await import(`${dist}/${file}`);
const formatInbound = Object.values(mod).find((f) => typeof f === "function" && f.toString().includes("resolvedSender"));

const t = Date.UTC(2026, 2, 5, 13, 2, 0);
const senders = [
  // channel, from label (as the channel monitors build it), chat type, sender
  ["Telegram", "Ana Souza (@ana_s) id:5551234567", "direct", { name: "Ana Souza", username: "ana_s", id: "5551234567" }],
  ["Telegram", "Ops Team id:-1001234567890", "group", { name: "Ana Souza", username: "ana_s", id: "5551234567" }],
  ["Zalo", "user:8412345678", "direct", { id: "8412345678" }],
  ["Zalo", "Minh Tran", "direct", { name: "Minh Tran", id: "8412345678" }],
  ["Zalo Personal", "group:77001122", "group", { name: "Lan" }],
  ["Feishu", "ou_7f3a9c2e51", "direct", { id: "ou_7f3a9c2e51" }],
  ["WebChat", "", "direct", {}],
  ["WhatsApp", "+15550001111", "direct", { e164: "+15550001111" }],
];
const envelopes = [
  { timezone: "utc" }, { timezone: "Asia/Ho_Chi_Minh" }, { timezone: "local" },
  { timezone: "utc", includeElapsed: false }, { includeTimestamp: false },
];
const bodies = ["can you check the deploy logs?", "Chào bạn, hôm nay Hà Nội có mưa không?", "帮我总结一下这份文档的要点",
  "[draft] keep my brackets: a [b] c", "line one\nline two: with a colon"];
const out = [];
let k = 0;
for (const [channel, from, chatType, sender] of senders) {
  for (const envelope of envelopes) {
    const body = bodies[k % bodies.length];
    const prompt = formatInbound({ channel, from, chatType, sender, body, timestamp: t + k * 60000,
      previousTimestamp: k % 2 ? t - 12 * 60000 : undefined, envelope });
    out.push([k % 3 === 0 ? `${prompt}\n[message_id: ${4800 + k}]` : prompt, body]);
    k++;
  }
}
console.log(JSON.stringify(out));
