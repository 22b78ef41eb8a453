// Verdicts and matches of JavaScript's RegExp (no flags), as a Nosana host applies an op's
// results patterns: new RegExp(pattern === '*' ? '/*' : pattern), then line.match(regex).
import { writeFileSync } from 'node:fs';

const patterns = [
  // accepted, plain
  'loss=([0-9.]+)', 'accuracy: (\\d+\\.\\d+)', '^step (\\d+)$', 'metrics (.*)', 'token=(.*)',
  '(?<epoch>\\d+)/(?<total>\\d+)', '(\\w+)=(\\S+)', '\\s+done', '[^]', '[]', 'a{,3}', 'x{2,3}',
  'a{', '}', ']', 'a{1', '\\a\\e\\z', '\\Z', '\\A', '\\cJ', '\\c1', '[\\c1]', '[\\c_]',
  '\\101', '\\8', '(a)\\1', '\\1(a)', '(a)|\\1b', '(a\\1)', '\\k<x>', '(?<x>a)\\k<x>',
  '(?=a)*b', '(?!a)+', '\\x41\\u0042', '\\x4', '\\u12', '[a-z]+', '[\\d-z]', '[z-\\d]',
  '[\\w-]+', '\\bword\\b', '(?<=\\$)\\d+', '(?<!x)y', '*', 'a|', '|', '', '.', '.+',
  '\\0', '\\00', '[\\b]', '\\/', 'café=(\\w+)', '(\\d+)%', 'é+', '[^\\s]+', '[\\S]+',
  '\\d+(?:\\.\\d+)?', 'a{3}', 'a{2,}', 'a{1,2}?', 'a*?', '(?:x)', '^', '$', '\\$', 'a$',
  'line\\n', '\\t', '[\\u00e9]', '\\p{L}', '[a-]', '[-a]', '[\\-]', 'a\\-b', '\\k',
  // refused by JavaScript
  '(', ')', '(abc', 'abc)', '[abc', '*a', '+', '?', 'a**', 'a{2,1}', '[z-a]', '\\',
  'a\\', '(?P<name>x)', '(?i)abc', '(?<1a>x)', '(?<x>a)(?<x>b)', '(?<x>a)\\k<y>',
  '(?<x>a)\\k', '(?<=a)*', '^*', '$+', '\\b*', '{1}', 'a|*', '(?<a', '(?', '(?#c)', '[\\d-',
  // accepted by JavaScript, not by Python's re (variable-width lookbehind)
  '(?<=a+)b', '(?<=ab|c)d',
];
const lines = [
  'loss=0.25\n', 'accuracy: 93.50\n', 'step 12\n', 'step 12', 'metrics {"acc": 0.9}\n',
  'token=abc\r\n', 'epoch 3/10 lr=0.1\n', 'word and words\n', 'aaa{3}\n', 'x\ny\n',
  '$42 and 7\n', 'café=noir\n', 'ab', 'b', 'aab', 'xy yy', '\u00a0 done\n', 'a-b c\n',
  '50% done\n', 'é\n', 'A\x07\x1b', 'AB\n', '\n', '', 'cd', 'abd\n', 'é-\u2028x\n',
];
const out = [];
for (const pattern of patterns) {
  let re;
  try {
    re = new RegExp(pattern === '*' ? '/*' : pattern);
  } catch (err) {
    out.push({ pattern, valid: false, error: String(err) });
    continue;
  }
  const matches = lines.map((line) => {
    const m = line.match(re);
    return m === null ? null : Array.from(m, (v) => (v === undefined ? null : v));
  });
  out.push({ pattern, valid: true, matches });
}
writeFileSync(process.argv[2], JSON.stringify({
  source: `JavaScript RegExp of Node ${process.version} (V8), no flags; line.match(re)`,
  notes: 'matches[i] is lines[i].match(new RegExp(pattern)): the whole match then the groups (null for a group that did not take part), or null. A host reads the pattern "*" as "/*".',
  lines, cases: out,
}, null, 1) + '\n');
