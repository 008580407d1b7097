// Test helper: tries to open a database through Mycelite in a separate process and reports the outcome
// as one JSON line on stdout. Usage: node second-writer.mjs <dist/src/node/index.js> <db path>
const [, , entry, dbPath] = process.argv;
const { open } = await import(entry);
try {
  const db = await open(dbPath);
  db.close();
  console.log(JSON.stringify({ ok: true }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, name: e.name, message: e.message }));
}
