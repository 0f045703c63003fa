"""Findings: the stable codes, bilingual messages and hints every rejection is made of.

A finding is data, not an exception. Messages are templates filled from keyword parameters that never
carry a field value: values travel separately in ``Finding.value`` so that restricted tables can simply
leave it out and nothing secret can leak through a message.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

MAX_REPORTED = 100
"""How many findings a file report keeps in detail; the rest are only counted (spec 4)."""


class Severity(StrEnum):
    ERROR = "error"  # the file is rejected
    NOTICE = "notice"  # the file goes on, the receipt and history say so (LATE, HELD_WINDOW, DUPLICATE)


@dataclass(frozen=True, slots=True)
class Template:
    severity: Severity
    message_zh: str
    message_en: str
    hint_zh: str
    hint_en: str


_E = Severity.ERROR
_N = Severity.NOTICE

CATALOGUE: dict[str, Template] = {
    "NAME_INVALID": Template(
        _E,
        "文件名不符合命名规则：{problem_zh}",
        "The file name does not follow the naming rule: {problem_en}",
        "文件名格式为 系统-机构编号_表代码_版本_分册_数据日期_批次_模式.TXT，例如 "
        "CISP-41210000_D1001_V01_1_20220401_01_Q.TXT{suggestion_zh}",
        "Names look like SYSTEM-ORG_TABLE_VERSION_PART_DATE_BATCH_MODE.TXT, e.g. "
        "CISP-41210000_D1001_V01_1_20220401_01_Q.TXT{suggestion_en}",
    ),
    "SYSTEM_UNKNOWN": Template(
        _E,
        "文件名中的系统前缀 {system} 未被允许",
        "The system prefix {system} in the file name is not allowed",
        "请使用允许的系统前缀：{allowed}",
        "Use one of the allowed system prefixes: {allowed}",
    ),
    "ORG_MISMATCH": Template(
        _E,
        "文件名中的机构编号 {org} 与传输编码所属机构 {expected} 不一致",
        "The institution code {org} in the file name is not the transfer code's institution {expected}",
        "每个传输编码只能报送其所属机构的文件，请检查文件名中的机构编号或更换传输通道",
        "A transfer code may only send files of its own institution: fix the code in the name or "
        "send on the right channel",
    ),
    "TABLE_UNKNOWN": Template(
        _E,
        "表代码 {table} 不在接口表目录中",
        "Table {table} is not in the interface table catalogue",
        "请核对接口规范中的表代码（如 D1001）",
        "Check the table code against the interface specification (e.g. D1001)",
    ),
    "TABLE_NOT_ALLOWED": Template(
        _E,
        "传输编码 {transfer_code} 未被授权报送表 {table}",
        "Transfer code {transfer_code} is not allowed to send table {table}",
        "请联系运维人员开通该表的报送权限，或通过正确的传输编码报送",
        "Ask the operators to allow this table for the transfer code, or send it on the right channel",
    ),
    "VERSION_UNSUPPORTED": Template(
        _E,
        "表 {table} 不支持接口版本 {version}",
        "Table {table} does not support interface version {version}",
        "支持的版本：{supported}",
        "Supported versions: {supported}",
    ),
    "DATE_INVALID": Template(
        _E,
        "数据日期 {date} 不是有效的日历日期",
        "The data date {date} is not a real calendar date",
        "日期格式为 YYYYMMDD，例如 20220401",
        "Dates are YYYYMMDD, e.g. 20220401",
    ),
    "DATE_IN_FUTURE": Template(
        _E,
        "数据日期 {date} 晚于今天 {today}",
        "The data date {date} is after today ({today})",
        "数据日期不能晚于报送当天，请检查文件名中的日期",
        "The data date cannot be later than the day of sending: check the date in the name",
    ),
    "MODE_INVALID": Template(
        _E,
        "表 {table} 不允许报送模式 {mode}",
        "Table {table} does not accept mode {mode}",
        "该表允许的模式：{allowed}（Q 全量，Z 增量）",
        "Modes this table accepts: {allowed} (Q full, Z incremental)",
    ),
    "FIRST_REPORT_NOT_FULL": Template(
        _E,
        "增量表 {table} 的首次报送必须为全量（Q）",
        "The first report of incremental table {table} must be full (Q)",
        "请先报送该表的全量文件（文件名以 _Q 结尾），再报送增量文件",
        "Send a full file (name ending in _Q) for this table first, then incremental ones",
    ),
    "BOM_PRESENT": Template(
        _E,
        "文件以 UTF-8 BOM（EF BB BF）开头",
        "The file starts with a UTF-8 byte order mark (EF BB BF)",
        "Windows 记事本保存为 UTF-8 时会加入 BOM，平台会因此报告首个字段（JGBH）超长；"
        "请另存为“UTF-8（无 BOM）”后重新报送",
        "Windows Notepad adds a BOM when saving as UTF-8 and the platform would then report the first "
        "field (JGBH) as too long: save as 'UTF-8 without BOM' and send again",
    ),
    "ENCODING_INVALID": Template(
        _E,
        "第 {line} 行含有无效的 UTF-8 字节（文件内偏移 {offset}）",
        "Line {line} holds bytes that are not valid UTF-8 (byte offset {offset})",
        "文件必须使用 UTF-8 编码；若由 Excel 或旧系统导出，请转换为 UTF-8（无 BOM），不要使用 GBK",
        "Files must be UTF-8: convert exports from Excel or older systems to UTF-8 (no BOM), not GBK",
    ),
    "NUL_BYTE": Template(
        _E,
        "第 {line} 行含有 NUL（0x00）字节",
        "Line {line} contains a NUL (0x00) byte",
        "NUL 字节通常来自 UTF-16 编码或损坏的导出，请以 UTF-8 重新导出",
        "NUL bytes usually come from UTF-16 or a broken export: export again as UTF-8",
    ),
    "CONTROL_CHAR": Template(
        _E,
        "第 {line} 行第 {field_no} 个字段含有控制字符 {char}",
        "Field {field_no} on line {line} contains the control character {char}",
        "字段内不允许出现换行、制表符等控制字符（含 U+2028/U+2029），请清理数据后重新导出",
        "Fields may not contain control characters such as tabs or line separators (incl. U+2028/U+2029): "
        "clean the data and export again",
    ),
    "LINE_ENDINGS_MIXED": Template(
        _E,
        "第 {line} 行的换行符（{found}）与文件首行（{expected}）不一致",
        "Line {line} ends with {found} while the file started with {expected}",
        "整个文件须统一使用 LF 或 CRLF 换行，不能混用，也不能只用 CR",
        "Use either LF or CRLF throughout the file, never both and never CR alone",
    ),
    "FIELD_COUNT": Template(
        _E,
        "第 {line} 行有 {found} 个字段，表 {table} 要求 {expected} 个",
        "Line {line} has {found} fields, table {table} needs {expected}",
        "字段以 | 分隔，不加引号；请检查字段内是否含有 | 或缺少字段",
        "Fields are separated by | without quotes: look for a | inside a value or a missing field",
    ),
    "REQUIRED_EMPTY": Template(
        _E,
        "第 {line} 行必填字段 {field}（第 {field_no} 个）为空",
        "Required field {field} (no. {field_no}) is empty on line {line}",
        "请为该字段填写值",
        "Fill in a value for this field",
    ),
    "FIELD_TOO_LONG": Template(
        _E,
        "第 {line} 行字段 {field} 长度为 {length} 个字符，超过上限 {max}",
        "Field {field} on line {line} is {length} characters long, more than the maximum {max}",
        "长度按字符计算（一个汉字为一个字符），请截短或核对字段内容",
        "Lengths count characters (one Chinese character is one): shorten or check the value",
    ),
    "FIELD_LENGTH": Template(
        _E,
        "第 {line} 行字段 {field} 长度为 {length} 个字符，须恰好为 {expected} 个",
        "Field {field} on line {line} is {length} characters long, it must be exactly {expected}",
        "定长代码字段不足位时请补足（如前导 0），不要带空格",
        "Fixed-length codes must be complete (keep leading zeros) and carry no spaces",
    ),
    "FIELD_FORMAT": Template(
        _E,
        "第 {line} 行字段 {field} 不符合格式 {expected}",
        "Field {field} on line {line} does not match the format {expected}",
        "{format_hint_zh}",
        "{format_hint_en}",
    ),
    "FIELD_ENUM": Template(
        _E,
        "第 {line} 行字段 {field} 的值不在取值范围 {allowed} 内",
        "Field {field} on line {line} is not one of {allowed}",
        "请使用接口规范中列出的代码值",
        "Use one of the code values listed in the interface specification",
    ),
    "FIELD_MISMATCH": Template(
        _E,
        "第 {line} 行字段 {field} 与文件名中的{source_zh}不一致（应为 {expected}）",
        "Field {field} on line {line} differs from the {source_en} in the file name (expected {expected})",
        "文件内的机构编号与数据日期必须与文件名一致",
        "The institution code and data date inside the file must match the file name",
    ),
    "ZIP_NAME_ENCODING": Template(
        _E,
        "附件压缩包成员“{member}”的文件名不是 UTF-8 编码（按 {guessed} 推测）",
        "The attachment member '{member}' has a name not flagged as UTF-8 (guessed as {guessed})",
        "请使用能标记 UTF-8 文件名的压缩工具重新压缩"
        "（如 7-Zip 选择 UTF-8，或在 UTF-8 语言环境下使用 zip 3.0）",
        "Compress again with a tool that flags UTF-8 names "
        "(e.g. 7-Zip with UTF-8, or zip 3.0 in a UTF-8 locale)",
    ),
    "ZIP_UNSAFE": Template(
        _E,
        "附件压缩包成员“{member}”不安全：{problem_zh}",
        "The attachment member '{member}' is unsafe: {problem_en}",
        "压缩包只能包含平铺的普通文件：不含目录、..、绝对路径、符号链接、重名或加密成员",
        "The archive may only hold flat regular files: no directories, '..', absolute paths, symlinks, "
        "duplicate names or encryption",
    ),
    "ZIP_CORRUPT": Template(
        _E,
        "附件压缩包已损坏：{problem_zh}",
        "The attachment archive is corrupt: {problem_en}",
        "请重新压缩并完整上传；上传中断会导致压缩包被截断",
        "Compress it again and upload it completely; an interrupted upload truncates the archive",
    ),
    "ZIP_LIMIT": Template(
        _E,
        "附件压缩包超出限制：{problem_zh}",
        "The attachment archive exceeds a limit: {problem_en}",
        "请拆分附件或联系运维人员确认限制",
        "Split the attachments or ask the operators about the limits",
    ),
    "ATTACHMENT_MISSING": Template(
        _E,
        "附件缺失：{problem_zh}",
        "Attachment missing: {problem_en}",
        "TXT 与同名 ZIP 须在 {minutes} 分钟内先后到达，请补发缺少的文件",
        "The TXT and the ZIP of the same name must arrive within {minutes} minutes of each other: "
        "send the missing one",
    ),
    "ATTACHMENT_MISMATCH": Template(
        _E,
        "附件与附件信息不一致：{problem_zh}",
        "Attachments and attachment rows disagree: {problem_en}",
        "每条新增/更新的附件记录（FJMC）须对应压缩包中恰好一个成员，且大小（WJDX）和 SHA256 一致",
        "Every add/update row's FJMC must name exactly one member, with matching size (WJDX) and SHA256",
    ),
    "ATTACHMENT_REJECTED": Template(
        _E,
        "与本文件配对的 {partner} 未通过校验，TXT 与 ZIP 作为一个整体被拒收",
        "{partner}, which belongs with this file, was rejected: the TXT and its ZIP are rejected together",
        "请按 {partner} 的问题修正后，将 TXT 与 ZIP 一并重新发送",
        "Fix what is reported for {partner}, then send the TXT and the ZIP again, both of them",
    ),
    "FEEDBACK_NAME_INVALID": Template(
        _E,
        "无法识别的回执文件名 {name}（应为 <报送文件名主干>_OK.TXT 或 _BAD.TXT），已隔离",
        "Not a feedback file name: {name} (expected <report stem>_OK.TXT or _BAD.TXT); quarantined",
        "请检查报送平台写入回执目录的内容，处理后将隔离区中的文件移回回执目录（去掉文件名前的编号）即可重新投递",
        "Check what the core writes into the route's feedback directory, then move the quarantined file "
        "back into the feedback directory (without its id prefix)",
    ),
    "FEEDBACK_NO_MAILBOX": Template(
        _E,
        "机构 {institution} 在站点 {stations} 没有登记可接收该回执的文件传输编码，回执已隔离",
        "No registered transfer code of institution {institution} on {stations} can take this feedback; "
        "quarantined",
        "请在传输编码登记表中补登，处理后将隔离区中的文件移回回执目录（去掉文件名前的编号）即可重新投递",
        "Register the code, then move the quarantined file back into the feedback directory "
        "(without its id prefix)",
    ),
    "FEEDBACK_OUTBOX_BLOCKED": Template(
        _E,
        "out/ 目录中同名位置被一个目录占用（{blocked}），回执已隔离",
        "A directory is in the way in out/ ({blocked}); quarantined",
        "请移走该目录，处理后将隔离区中的文件移回回执目录（去掉文件名前的编号）即可重新投递",
        "Remove it, then move the quarantined file back into the feedback directory (without its id prefix)",
    ),
    "UNKNOWN_TRANSFER_CODE": Template(
        _E,
        "传输编码 {transfer_code} 未在站点 {station} 注册",
        "Transfer code {transfer_code} is not registered on station {station}",
        "未在注册传输编码上到达的文件不会被接收，请联系运维人员核对传输编码",
        "Files that do not arrive on a registered transfer code are not received: check the code with "
        "the operators",
    ),
    "STATION_NOT_ALLOWED": Template(
        _E,
        "传输编码 {transfer_code} 未被允许使用站点 {station}",
        "Transfer code {transfer_code} may not use station {station}",
        "测试站点为 k1237，生产站点为 k6666，请在已开通的站点报送",
        "k1237 is the test station and k6666 production: send on a station opened for this code",
    ),
    "NOT_REGULAR_FILE": Template(
        _E,
        "收件箱中的“{kind}”不是普通文件，未读取",
        "The {kind} found in the inbox is not a regular file and was not read",
        "只接收普通文件；请勿放置符号链接、目录、管道或设备文件",
        "Only regular files are taken: do not place symlinks, directories, pipes or devices in the inbox",
    ),
    "FILE_TOO_LARGE": Template(
        _E,
        "文件大小 {size} 字节超过上限 {max} 字节",
        "The file is {size} bytes, more than the limit of {max} bytes",
        "请拆分为多个分册（文件名中的分册号）报送",
        "Split the table into several parts (the part number in the name)",
    ),
    "FILE_CHANGED": Template(
        _E,
        "文件在校验通过后被修改，未转发",
        "The file changed after it was validated; it was not forwarded",
        "文件放入收件箱后请勿再修改；如需更正，请以新的批次号重新报送",
        "Do not change a file once it is in the inbox; to correct it, send it again with the next batch",
    ),
    "DUPLICATE": Template(
        _N,
        "与已接收的文件（{file_id}）完全相同，未重复转发",
        "Identical to a file already received ({file_id}); not forwarded again",
        "无需处理；若为重报，请使用更大的批次号",
        "Nothing to do; for a re-report use a higher batch number",
    ),
    "BATCH_STALE": Template(
        _E,
        "批次 {batch} 不大于已接收的批次 {accepted}",
        "Batch {batch} is not higher than the batch {accepted} already accepted",
        "重报同一期数据时请使用下一个批次号（{next_batch}）",
        "A re-report of the same period takes the next batch number ({next_batch})",
    ),
    "TASK_NOT_IN_PREPARATION": Template(
        _E,
        "任务不在数据准备状态，重试 {minutes} 分钟后仍未成功",
        "The task is not in the data-preparation state; retried for {minutes} minutes without success",
        "请将报送任务退回数据准备状态后重新报送该文件",
        "Return the reporting task to the data-preparation state and send the file again",
    ),
    "CORE_REJECTED": Template(
        _E,
        "报送平台拒收：{core_message}",
        "The reporting core rejected the file: {core_message}",
        "请根据平台返回的信息修正后重新报送",
        "Correct the file as the core's message says and send it again",
    ),
    "HELD_WINDOW": Template(
        _N,
        "已校验通过，按报送时间窗要求暂缓转发至 {until}",
        "Validated; forwarding is held until {until} by the reporting window",
        "无需处理，文件将在时间窗结束后自动转发",
        "Nothing to do: the file is forwarded automatically when the window ends",
    ),
    "WINDOW_CLOSED": Template(
        _E,
        "生产站点报送时间窗内（交易日 11:30-15:00）不接收日频表，本通道不暂存",
        "Daily tables are not taken on production during the trading-day window (11:30-15:00), "
        "and this route does not hold them",
        "请于 {until} 之后重新发送该文件",
        "Send the file again after {until}",
    ),
    "LATE": Template(
        _N,
        "晚于报送截止时间 {deadline}",
        "Later than the reporting deadline {deadline}",
        "文件已接收，但已过报送截止时间：请按规定申请迟报或补报",
        "The file was accepted after its deadline: apply for a late or supplementary report",
    ),
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong (or worth saying) about a file, positioned where it applies."""

    code: str
    severity: Severity
    message_zh: str
    message_en: str
    hint_zh: str
    hint_en: str
    line: int = 0  # 0 = the file as a whole
    field_no: int = 0  # 1-based, 0 = no particular field
    field: str = ""  # field code, e.g. JGBH
    value: str | None = None  # the offending value; never set for restricted tables

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.value is None:
            del data["value"]
        return data

    def without_value(self) -> Finding:
        """The same finding with the value dropped (for restricted tables' outputs)."""
        if self.value is None:
            return self
        return Finding(
            self.code,
            self.severity,
            self.message_zh,
            self.message_en,
            self.hint_zh,
            self.hint_en,
            self.line,
            self.field_no,
            self.field,
            None,
        )


def make(
    code: str,
    *,
    line: int = 0,
    field_no: int = 0,
    field: str = "",
    value: str | None = None,
    **params: object,
) -> Finding:
    """Build a finding from the catalogue; ``params`` fill the message templates."""
    template = CATALOGUE[code]
    params.setdefault("line", line)
    params.setdefault("field_no", field_no)
    params.setdefault("field", field)
    return Finding(
        code=code,
        severity=template.severity,
        message_zh=template.message_zh.format(**params),
        message_en=template.message_en.format(**params),
        hint_zh=template.hint_zh.format(**params),
        hint_en=template.hint_en.format(**params),
        line=line,
        field_no=field_no,
        field=field,
        value=value,
    )


class FindingLog:
    """Collects findings: keeps the first ``MAX_REPORTED`` in detail and counts them all."""

    __slots__ = ("_limit", "items", "total")

    def __init__(self, limit: int = MAX_REPORTED) -> None:
        self._limit = limit
        self.items: list[Finding] = []
        self.total = 0

    def add(self, finding: Finding) -> None:
        self.total += 1
        if len(self.items) < self._limit:
            self.items.append(finding)

    def extend(self, findings: list[Finding]) -> None:
        for finding in findings:
            self.add(finding)

    def absorb(self, items: list[Finding], total: int) -> None:
        """Take over another report's kept findings and its count of all of them."""
        self.extend(items)
        self.total += total - len(items)

    @property
    def full(self) -> bool:
        return len(self.items) >= self._limit

    @property
    def room(self) -> int:
        """How many more findings are kept before the log is full (at least 1)."""
        return max(1, self._limit - len(self.items))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.items if f.severity is Severity.ERROR]

    @property
    def has_errors(self) -> bool:
        return any(f.severity is Severity.ERROR for f in self.items)
