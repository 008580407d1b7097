/**
 * A hub target names one hub or several (`http://a:8080,http://b:8080` on the command line, an array in
 * the API): clients use the first that answers and move to the next on failure. Runtime-neutral.
 */

/** One hub URL, or several (an array, or one string with commas). */
export type HubUrls = string | readonly string[];

/** The hubs of `urls`, each a checked http(s) URL without trailing slashes; throws a one-line error. */
export function parseHubUrls(urls: HubUrls): string[] {
  const list = (typeof urls === 'string' ? urls.split(',') : [...urls]).map((u) => String(u).trim());
  if (list.length === 0 || list.every((u) => u === ''))
    throw new Error('no hub URL: give one, e.g. http://127.0.0.1:8080 (several: separated by commas)');
  return list.map((u) => {
    let url: URL | undefined;
    try {
      url = new URL(u);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || u.includes(' ')) {
      throw new Error(`hub URL ${JSON.stringify(u)} is not an http(s) URL (e.g. http://127.0.0.1:8080)`);
    }
    return u.replace(/\/+$/, '');
  });
}

/** The hubs of `urls` for messages: `http://a:8080` or `http://a:8080,http://b:8080`. */
export function describeHubUrls(urls: HubUrls): string {
  return typeof urls === 'string' ? urls : urls.join(',');
}
