/** Database names (docs/PROTOCOL.md, "Names"). */

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Returns why `name` is not a valid database name, or undefined when it is. */
export function checkDbName(name: string): string | undefined {
  if (!NAME_RE.test(name) || name.includes('..')) {
    const shown = JSON.stringify(name.length > 40 ? `${name.slice(0, 40)}…` : name);
    return `database name ${shown} is not allowed: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'`;
  }
  return undefined;
}
